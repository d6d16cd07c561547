"""Named weight sets (``MODEL.TAG``), as torchvision's and timm's ``weights=``: shipped in the
package (trained by cnnzoo, see ``scripts/make_weights.py``) or downloaded from a URL into a
verified cache (torchvision's ImageNet weights).

    >>> import cnnzoo
    >>> ws = cnnzoo.weights.get("resnet20.fmnist")
    >>> model = cnnzoo.create_model("resnet20", weights="fmnist")
    >>> tf = ws.transforms()                      # the preprocessing the weights expect

Every place that takes a run directory (``predict``, ``eval``, ``--weights``...) takes a
weight set's name too.
"""

from cnnzoo.weights.cache import (
    Verified,
    cache_dir,
    cnnzoo_home,
    fetch,
    file_path,
    load_state_dict,
    local_file,
    offline,
    verify,
    verify_file,
)
from cnnzoo.weights.catalog import (
    get,
    is_weight_name,
    list_weights,
    looks_like_weight_name,
    register,
    unregister,
)
from cnnzoo.weights.entry import Preprocessing, WeightSet

__all__ = [
    "Preprocessing",
    "Verified",
    "WeightSet",
    "cache_dir",
    "cnnzoo_home",
    "fetch",
    "file_path",
    "get",
    "is_weight_name",
    "list_weights",
    "load_state_dict",
    "local_file",
    "looks_like_weight_name",
    "offline",
    "register",
    "unregister",
    "verify",
    "verify_file",
]
