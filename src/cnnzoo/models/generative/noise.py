"""Input corruption for denoising autoencoders, named by a short spec string.

Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing Robust Features with
Denoising Autoencoders", ICML 2008: the encoder sees a corrupted copy ``x~ ~ q(x~ | x)`` and
the decoder is trained to give back the clean ``x``. The paper's corruption is masking noise
(a fixed number of randomly chosen inputs forced to 0, sec. 2.3); its journal follow-up
(Vincent et al., JMLR 2010, sec. 4.1) adds isotropic Gaussian noise and salt-and-pepper noise.
The three are selected here by ``"kind:amount"``:

* ``"gaussian:0.3"``: ``x + N(0, 0.3^2)`` per value, clamped to [0, 1];
* ``"saltpepper:0.1"``: 10% of the pixels of each image set to 0 or 1 (a fair coin each);
* ``"mask:0.25"``: 25% of the pixels of each image set to 0;
* ``"none"``: no corruption.

As in the paper, masking and salt-and-pepper choose an exact number of pixels per image
(``round(amount * H * W)``), not each pixel independently. A pixel is a spatial position:
all its channels are corrupted together. Images are expected in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError

NOISE_KINDS = ("gaussian", "saltpepper", "mask", "none")
_VALID_FORMS = "'gaussian:SIGMA' (SIGMA >= 0), 'saltpepper:FRACTION', 'mask:FRACTION' or 'none'"


def parse_noise(spec: str) -> tuple[str, float]:
    """Return ``(kind, amount)`` of a corruption spec such as ``"gaussian:0.3"``.

    ``"none"`` gives ``("none", 0.0)``.

    Raises:
        CnnzooError: for an unknown kind, a missing or non-numeric amount, a negative sigma,
            or a fraction outside [0, 1]; the message names the spec and the valid forms.
    """
    if not isinstance(spec, str):
        raise CnnzooError(f"noise spec must be a string, got {spec!r}; use {_VALID_FORMS}")
    kind, sep, value = spec.strip().lower().partition(":")
    if kind == "none" and not sep:
        return "none", 0.0
    if kind not in NOISE_KINDS or kind == "none" or not sep:
        raise CnnzooError(f"bad noise spec {spec!r}; use {_VALID_FORMS}")
    try:
        amount = float(value)
    except ValueError:
        raise CnnzooError(
            f"bad noise spec {spec!r}: {value!r} is not a number; use {_VALID_FORMS}"
        ) from None
    if not amount >= 0 or amount == float("inf"):  # also rejects NaN
        raise CnnzooError(f"bad noise spec {spec!r}: the amount must be >= 0; use {_VALID_FORMS}")
    if kind != "gaussian" and amount > 1:
        raise CnnzooError(
            f"bad noise spec {spec!r}: {kind} takes a fraction of pixels in [0, 1]; "
            f"use {_VALID_FORMS}"
        )
    return kind, amount


def corrupt(x: Tensor, spec: str, generator: torch.Generator | None = None) -> Tensor:
    """Return a corrupted copy of the images ``x`` (N, C, H, W) in [0, 1]; ``x`` is unchanged.

    Args:
        x: clean images in [0, 1].
        spec: the corruption, see :func:`parse_noise` and the module docstring.
        generator: random generator for reproducible noise (its device may differ from
            ``x``'s: the noise is drawn on the generator's device and moved).

    Returns:
        A tensor of ``x``'s shape, dtype and device.

    Raises:
        CnnzooError: for a bad spec (see :func:`parse_noise`) or ``x`` not 4-dimensional.
    """
    kind, amount = parse_noise(spec)
    if x.dim() != 4:
        raise CnnzooError(f"corrupt expects images (N, C, H, W), got shape {tuple(x.shape)}")
    if kind == "none" or amount == 0:
        return x.clone()
    noise_device = generator.device if generator is not None else x.device
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=noise_device, dtype=x.dtype)
        return (x + amount * noise.to(x.device)).clamp(0, 1)

    n, _, h, w = x.shape
    count = round(amount * h * w)
    # An exact number of pixels per image: the first ``count`` of a random permutation.
    order = torch.rand(n, h * w, generator=generator, device=noise_device).argsort(dim=1)
    chosen = torch.zeros(n, h * w, dtype=torch.bool, device=noise_device)
    chosen.scatter_(1, order[:, :count], True)
    chosen = chosen.view(n, 1, h, w).to(x.device)
    if kind == "mask":
        return x.masked_fill(chosen, 0)
    # Salt and pepper: each chosen pixel becomes 1 or 0 with equal probability.
    salt = torch.rand(n, 1, h, w, generator=generator, device=noise_device) < 0.5
    values = salt.to(device=x.device, dtype=x.dtype).expand_as(x)
    return torch.where(chosen.expand_as(x), values, x)
