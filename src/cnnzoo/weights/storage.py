"""How a weight set is stored on disk: fp32, fp16, or int8 with per-channel scales.

Shipped files must stay small (the package carries them), so cnnzoo stores them in fewer bits
and expands them to float32 when they are read. The storage type is written in the
safetensors header (``"cnnzoo.storage"``), so any reader of cnnzoo files
(:func:`read_safetensors`) gets float32 tensors back whatever the storage.

- ``fp16``: every floating tensor in half precision (max relative error 2^-11).
- ``int8``: every weight matrix or kernel with at least :data:`INT8_MIN_ELEMENTS` elements as
  int8 with one float32 scale per output channel (symmetric: ``w ≈ q * scale``, ``q`` in
  [-127, 127], ``scale = max|w_c| / 127``); the other floating tensors (biases, BatchNorm) in
  fp16. This is weight-only quantization for storage: the model computes in float32 after
  loading (int8 *inference* is ``cnnzoo compress --quantize int8``).

Integer tensors (BatchNorm's step counter) are kept as they are. Whether a weight set keeps
its metric in a given storage is measured when it is packaged (``scripts/make_weights.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError, load_error_line

STORAGES = ("fp32", "fp16", "int8")
STORAGE_KEY = "cnnzoo.storage"
SCALE_SUFFIX = ".int8_scale"
INT8_MIN_ELEMENTS = 1024
"""Smaller tensors are not worth a scale per channel; they are stored in fp16."""


def encode(state: Mapping[str, Tensor], storage: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Return the tensors to write for ``state`` in ``storage``, and the header metadata.

    Raises:
        CnnzooError: for a storage type that is not one of :data:`STORAGES`.
    """
    if storage not in STORAGES:
        raise CnnzooError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        if not value.is_floating_point() or storage == "fp32":
            out[key] = value
        elif storage == "int8" and value.dim() >= 2 and value.numel() >= INT8_MIN_ELEMENTS:
            out[key], out[key + SCALE_SUFFIX] = _quantize(value.float())
        else:
            out[key] = value.half()
    return out, {STORAGE_KEY: storage}


def decode(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None) -> dict[str, Tensor]:
    """Return the float32 state dict that ``tensors`` (as :func:`encode` wrote them) store.

    Files without cnnzoo's storage header (any other safetensors file) are returned as they are.

    Raises:
        CnnzooError: for an unknown storage type or an int8 tensor without its scales.
    """
    storage = (metadata or {}).get(STORAGE_KEY)
    if storage is None:
        return dict(tensors)
    if storage not in STORAGES:
        raise CnnzooError(f"unknown storage {storage!r} in the file's header")
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if value.dtype == torch.int8:
            scale = tensors.get(key + SCALE_SUFFIX)
            if scale is None:
                raise CnnzooError(f"int8 tensor {key} has no {key + SCALE_SUFFIX}")
            out[key] = value.float() * scale.view(-1, *([1] * (value.dim() - 1)))
        elif value.is_floating_point():
            out[key] = value.float()
        else:
            out[key] = value
    return out


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file into a float32 state dict, expanding cnnzoo's storage types.

    Raises:
        CnnzooError: if the file cannot be parsed as safetensors, or its cnnzoo storage
            header or int8 scales are wrong (the message names it).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as err:  # any parse failure becomes one clear line
        raise CnnzooError(f"cannot read weights from {path}: {load_error_line(err)}") from None
    try:
        return decode(tensors, metadata)
    except CnnzooError as err:
        raise CnnzooError(f"cannot read weights from {path}: {err}") from None
    except RuntimeError as err:  # int8 scales that do not fit their tensor
        first = (str(err).splitlines() or [""])[0]
        raise CnnzooError(
            f"cannot read weights from {path}: int8 scales do not fit ({first})"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file without running code from it: ``.safetensors`` (cnnzoo's storage
    types expanded to float32) or a ``.pth``/``.pt``/``.ckpt`` state dict through
    ``torch.load(weights_only=True)`` (a Lightning checkpoint gives its ``state_dict``).

    Returns:
        The tensors by name.

    Raises:
        CnnzooError: for a missing file, one that cannot be parsed, one whose pickle asks for
            anything but tensors (refused, never run), or one that is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnzooError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any parse failure becomes one clear line
        raise CnnzooError(f"cannot read weights from {path}: {load_error_line(err)}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:  # Lightning checkpoints
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CnnzooError(f"{path} does not hold a state dict (name -> tensor)")
    return dict(obj)


def _quantize(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(q, scale)``: int8 values and one float32 scale per output channel."""
    flat = weight.reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale
