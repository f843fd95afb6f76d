"""Physics-respecting batch augmentations (vectorised, cheap on CPU, run on the device).

Images arrive in *noise units* before the arcsinh stretch, so extra noise can be drawn
from the pixel ivar in the same linear space the noise lives in. Transformations are the
symmetries of a sky cutout (90° rotations, flips, sub-pixel recentring) — nothing that
changes the galaxy's physics (no colour jitter, no crops that could cut a tidal tail off).
Survey conditions are varied instead: extra noise (a shallower exposure) and extra
Gaussian blur (worse seeing), so the embedding does not depend on depth or PSF. Spectra get
extra noise from their ivar, masked wavelength windows (sky lines, bad columns, dichroic
gaps) and small flux-calibration tilts.

torchvision's v2 transforms draw *one* random parameter per call (the same for the whole
batch), and lightly's transforms work on PIL images; per-object randomness over a whole
batch in a few tensor ops is written here instead. All randomness comes from an explicit
``torch.Generator`` so training is reproducible and exactly resumable.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation strengths (0 disables a term).

    Attributes:
        rot90, flip: random 90° rotations / horizontal flips per object.
        shift_px: max sub-pixel shift (pixels, uniform in ±shift_px, bilinear).
        image_noise: extra Gaussian noise amplitude × per-pixel sigma (= ivar^-1/2), drawn
            uniformly in [0, image_noise] per object (depth: 1 = a 2× shorter exposure).
        psf_sigma: extra Gaussian blur, sigma in pixels drawn uniformly in [0, psf_sigma] per
            object (seeing; 0 = off). Applied before the noise, as in a real exposure.
        spectrum_noise: same for spectra.
        mask_windows: number of wavelength windows masked per spectrum (ivar set to 0).
        mask_width: window width as a fraction of the spectrum length.
        tilt: max relative flux-calibration tilt across the spectrum (e.g. 0.05 = ±5%).
        scale_jitter: Gaussian sigma (dex) added to the spectrum's log flux scale: fibre
            spectrophotometry is good to ~0.05 dex (seeing, fibre placement).
        scale_drop: probability of hiding the flux scale (NaN), so the model also learns
            to embed spectra that are not flux calibrated.
    """

    rot90: bool = True
    flip: bool = True
    shift_px: float = 0.5
    image_noise: float = 0.5
    psf_sigma: float = 0.0
    spectrum_noise: float = 0.5
    mask_windows: int = 2
    mask_width: float = 0.03
    tilt: float = 0.05
    scale_jitter: float = 0.05
    scale_drop: float = 0.1


def _uniform(n: int, gen: torch.Generator, device: torch.device, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return torch.rand(n, generator=gen, device="cpu").to(device) * (hi - lo) + lo


def _randn(shape: torch.Size, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Standard normal noise of a whole batch, drawn where it is used.

    On the CPU straight from ``gen``; on an accelerator from a device generator seeded from
    ``gen``, so the batch's megabytes of noise are neither drawn on the host nor copied over
    (and a run stays exactly reproducible on the same kind of device).
    """
    if device.type == "cpu":
        return torch.randn(shape, generator=gen).to(dtype)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return torch.randn(shape, generator=torch.Generator(device).manual_seed(seed), device=device, dtype=dtype)


def _warp(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Random flip, 90° rotation and sub-pixel shift of (N,C,H,W) in one bilinear resampling.

    The flip and rotation matrices have entries 0/±1, which map pixel centres onto pixel
    centres exactly, so without a shift the resampling is a pure permutation of pixels;
    one ``grid_sample`` replaces three per-object passes over the batch.
    """
    n, dev = x.shape[0], x.device
    h, w = x.shape[-2:]
    mat = torch.eye(2).repeat(n, 1, 1)
    if cfg.flip:
        flip = torch.rand(n, generator=gen) < 0.5
        mat[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    if cfg.rot90 and h == w:
        k = (torch.rand(n, generator=gen) * 4).long().clamp(max=3)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        mat = rot @ mat
    shift = torch.zeros(n, 2)
    if cfg.shift_px > 0:
        shift = torch.stack([_uniform(n, gen, torch.device("cpu"), -cfg.shift_px, cfg.shift_px) * 2 / w,
                             _uniform(n, gen, torch.device("cpu"), -cfg.shift_px, cfg.shift_px) * 2 / h], dim=1)
    if cfg.shift_px <= 0 and torch.equal(mat, torch.eye(2).expand(n, 2, 2)):
        return x
    theta = torch.cat([mat, shift[:, :, None]], dim=2).to(dev, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: Tensor, sigma: Tensor, radius: int = 3) -> Tensor:
    """Separable Gaussian blur of (N,C,H,W) with one sigma (pixels) per object, flux conserving."""
    n, c, h, w = x.shape
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    ker = torch.exp(-0.5 * (k[None] / sigma.to(x.dtype).clamp_min(1e-3)[:, None]) ** 2)
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(c, 0)[:, None, None, :]  # (N·C,1,1,K)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0)), ker, groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius)), ker.transpose(2, 3), groups=n * c)
    return y.reshape(n, c, h, w)


def augment_images(image: Tensor, ivar: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Augment (N,B,H,W) noise-unit images and their ivar consistently."""
    n, dev = image.shape[0], image.device
    b = image.shape[1]
    bad = (ivar <= 0).to(image.dtype)
    x = _warp(torch.cat([image, ivar, bad], dim=1), cfg, gen)  # transform image, ivar and mask together
    # a pixel that takes any weight from a masked one is masked: its variance is unknown
    keep = x[:, 2 * b:] < 1e-3
    img = torch.where(keep, x[:, :b], 0.0)
    iv = torch.where(keep, x[:, b:2 * b].clamp_min(0), 0.0)
    if cfg.psf_sigma > 0:
        img = _blur(img, _uniform(n, gen, dev, 0, cfg.psf_sigma))
    if cfg.image_noise > 0:
        amp = _uniform(n, gen, dev, 0, cfg.image_noise)[:, None, None, None]
        sigma = torch.where(iv > 0, iv.clamp_min(1e-12).rsqrt(), 0.0)
        img = torch.addcmul(img, amp * sigma, _randn(img.shape, gen, dev, img.dtype))
        iv = iv / (1 + amp**2)
    return img, iv


def augment_spectra(flux: Tensor, ivar: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Augment (N,L) normalised spectra and ivar (ivar = 0 marks bad pixels)."""
    n, length = flux.shape
    dev = flux.device
    good = ivar > 0
    if cfg.tilt > 0:
        t = _uniform(n, gen, dev, -cfg.tilt, cfg.tilt)[:, None]
        ramp = torch.linspace(-1, 1, length, device=dev)[None]
        factor = 1 + t * ramp
        flux = flux * factor
        ivar = ivar / factor**2
    if cfg.spectrum_noise > 0:
        amp = _uniform(n, gen, dev, 0, cfg.spectrum_noise)[:, None]
        sigma = torch.where(good, ivar.clamp_min(1e-12).rsqrt(), 0.0)
        flux = torch.addcmul(flux, amp * sigma, _randn(flux.shape, gen, dev, flux.dtype))
        ivar = ivar / (1 + amp**2)
    if cfg.mask_windows > 0 and cfg.mask_width > 0:
        width = max(1, int(cfg.mask_width * length))
        pos = torch.arange(length, device=dev)[None]
        for _ in range(cfg.mask_windows):
            start = (torch.rand(n, generator=gen) * (length - width)).long().to(dev)[:, None]
            good = good & ~((pos >= start) & (pos < start + width))
    ivar = torch.where(good, ivar, 0.0)
    flux = torch.where(good, flux, 0.0)
    return flux, ivar


def augment_scale(scale: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Jitter (and sometimes hide) the (N,) log10 flux scales of a batch of spectra."""
    n, dev = scale.shape[0], scale.device
    if cfg.scale_jitter > 0:
        scale = scale + cfg.scale_jitter * torch.randn(n, generator=gen).to(dev, scale.dtype)
    if cfg.scale_drop > 0:
        scale = torch.where(_uniform(n, gen, dev) < cfg.scale_drop, torch.full_like(scale, float("nan")), scale)
    return scale
