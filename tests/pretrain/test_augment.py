"""Batch augmentations respect the data's physics and are reproducible."""
from __future__ import annotations

import pytest
import torch

from galclip.pretrain.augment import AugmentConfig, augment_images, augment_spectra


def test_geometric_image_augs_preserve_flux_and_masks():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(16, 3, 20, 20, generator=g)
    ivar = torch.ones_like(img)
    ivar[:, :, :, :3] = 0  # masked columns travel with the pixels
    img[:, :, :, :3] = 0  # (and hold 0, as prepared images do)
    cfg = AugmentConfig(shift_px=0.0, image_noise=0.0)
    out, oiv = augment_images(img, ivar, cfg, torch.Generator().manual_seed(1))
    assert torch.allclose(out.sum((1, 2, 3)), img.sum((1, 2, 3)), rtol=1e-5)
    assert torch.equal((oiv == 0).sum((1, 2, 3)), (ivar == 0).sum((1, 2, 3)))
    assert not torch.equal(out, img)  # something was rotated/flipped
    again, _ = augment_images(img, ivar, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # same generator → same augmentation


def test_image_noise_follows_ivar():
    img = torch.zeros(64, 1, 16, 16)
    ivar = torch.full_like(img, 4.0)  # sigma 0.5
    ivar[:, :, :8] = 0
    cfg = AugmentConfig(rot90=False, flip=False, shift_px=0.0, image_noise=1.0)
    out, oiv = augment_images(img, ivar, cfg, torch.Generator().manual_seed(0))
    assert torch.all(out[:, :, :8] == 0)  # no noise invented where there is no data
    std = out[:, :, 8:].std().item()
    assert 0.2 < std < 0.45  # amplitude U(0,1) × sigma 0.5 → rms 0.5/sqrt(3) ≈ 0.29
    assert torch.all(oiv[:, :, 8:] <= 4.0) and torch.all(oiv[:, :, 8:] >= 2.0)


def test_spectrum_masking_tilt_and_noise():
    flux = torch.ones(32, 500)
    ivar = torch.full_like(flux, 100.0)
    ivar[:, 100:110] = 0
    cfg = AugmentConfig(spectrum_noise=0.0, mask_windows=2, mask_width=0.02, tilt=0.1)
    f, iv = augment_spectra(flux, ivar, cfg, torch.Generator().manual_seed(0))
    assert torch.all(iv[:, 100:110] == 0) and torch.all(f[iv == 0] == 0)
    masked = (iv == 0).sum(1)
    assert torch.all(masked >= 10 + 10) and torch.all(masked <= 10 + 2 * 10)
    good = iv > 0
    assert (f[good] - 1).abs().max() <= 0.1 + 1e-6 and (f[good] - 1).abs().max() > 0.01
    cfg2 = AugmentConfig(spectrum_noise=1.0, mask_windows=0, tilt=0.0)
    f2, iv2 = augment_spectra(flux, ivar, cfg2, torch.Generator().manual_seed(0))
    assert torch.all(f2[:, 100:110] == 0) and 0.03 < (f2[:, 200:] - 1).std() < 0.08


def test_flips_and_rotations_are_exact_pixel_permutations():
    """Without a shift the single-resampling warp must equal one of the 8 dihedral images."""
    img = torch.rand(64, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    cfg = AugmentConfig(shift_px=0.0, image_noise=0.0)
    out, _ = augment_images(img, torch.ones_like(img), cfg, torch.Generator().manual_seed(3))
    seen = set()
    for i in range(img.shape[0]):
        cands = [torch.rot90(f, k, dims=(-2, -1)) for f in (img[i], img[i].flip(-1)) for k in range(4)]
        hits = [j for j, c in enumerate(cands) if torch.allclose(out[i], c, atol=1e-6)]
        assert hits, f"object {i} is not an exact flip/rotation of its input"
        seen.add(hits[0])
    assert len(seen) == 8  # every element of the group is drawn


def test_shifted_pixels_touching_a_mask_are_masked_not_noisy():
    img = torch.ones(32, 1, 16, 16)
    ivar = torch.ones_like(img)
    ivar[:, :, :, 8] = 0
    img[:, :, :, 8] = 0
    cfg = AugmentConfig(rot90=False, flip=False, shift_px=0.5, image_noise=1.0)
    out, oiv = augment_images(img, ivar, cfg, torch.Generator().manual_seed(0))
    assert torch.all(out[oiv == 0] == 0)
    assert out.abs().max() < 10  # no huge noise from tiny interpolated ivar at mask edges
    assert (oiv == 0).sum() >= (ivar == 0).sum()


def test_psf_blur_widens_a_point_source_and_keeps_its_flux():
    img = torch.zeros(8, 2, 21, 21)
    img[:, :, 10, 10] = 1.0
    ivar = torch.ones_like(img)
    cfg = AugmentConfig(rot90=False, flip=False, shift_px=0.0, image_noise=0.0, psf_sigma=2.0)
    out, _ = augment_images(img, ivar, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(out.sum((2, 3)), torch.ones(8, 2), atol=1e-3)  # flux conserved (away from edges)
    peak = out[:, 0, 10, 10]
    assert torch.all(peak < 1.0) and peak.std() > 0.01  # blurred, by a different sigma per object
    assert torch.allclose(out[:, 0], out[:, 1])  # one PSF for all bands of an object


@pytest.mark.gpu
def test_noise_is_drawn_on_the_device_and_reproducible():
    """On an accelerator the noise comes from a device generator seeded from the step's
    generator: same seed → same batch, and no host-side draw."""
    img = torch.rand(8, 2, 16, 16, device="cuda")
    ivar = torch.ones_like(img)
    cfg = AugmentConfig(shift_px=0.5, image_noise=1.0, psf_sigma=1.0)
    a, _ = augment_images(img, ivar, cfg, torch.Generator().manual_seed(0))
    b, _ = augment_images(img, ivar, cfg, torch.Generator().manual_seed(0))
    assert a.device.type == "cuda" and torch.equal(a, b)
