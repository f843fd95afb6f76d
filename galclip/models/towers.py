"""Encoder towers: the timm image tower and a registry of 1-D (spectrum-like) towers.

Every tower is an ``nn.Module`` with

* ``num_features`` — width F of its pooled features,
* ``tokens(x, ivar) -> (N, T, F)`` — a token sequence for cross-attention fusion,
* ``forward(x, ivar) -> (N, F)`` — pooled features (before the projection head).

1-D towers are looked up by ``SpectrumTowerConfig.kind`` in :data:`TOWERS`; a colleague's
encoder (e.g. the tabular FT-Transformer) joins with :func:`register_tower` without
touching this file.
"""
from __future__ import annotations

import math
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galclip.data.preprocess import arcsinh_stretch
from galclip.errors import ConfigError
from galclip.models.config import ModelConfig

TowerBuilder = Callable[[ModelConfig], nn.Module]
TOWERS: dict[str, TowerBuilder] = {}


def register_tower(kind: str) -> Callable[[TowerBuilder], TowerBuilder]:
    """Decorator: make ``builder(model_cfg) -> nn.Module`` available as ``spectrum.kind``."""

    def deco(builder: TowerBuilder) -> TowerBuilder:
        TOWERS[kind] = builder
        return builder

    return deco


def build_tower(cfg: ModelConfig) -> nn.Module:
    """Build the second tower named by ``cfg.spectrum.kind``."""
    kind = cfg.spectrum.kind
    if kind not in TOWERS:
        raise ConfigError(f"unknown spectrum.kind {kind!r} (known: {', '.join(sorted(TOWERS))})")
    return TOWERS[kind](cfg)


class ImageTower(nn.Module):
    """timm backbone (headless, random init) on arcsinh-stretched noise-unit images.

    The stretch lives here, not in the data pipeline, so augmentations can redraw noise in
    linear units and every caller (embedding, fine-tuning, search by image file) gets the
    same transform for free.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ic = cfg.image
        kwargs = dict(ic.backbone_kwargs)
        if "img_size" in kwargs:
            kwargs["img_size"] = cfg.image_size
        self.n_bands = max(1, cfg.n_bands)
        try:
            self.backbone = timm.create_model(ic.backbone, pretrained=False,
                                              in_chans=self.n_bands * (2 if ic.residual else 1),
                                              num_classes=0, **kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:  # unknown name or kwargs
            raise ConfigError(f"image.backbone {ic.backbone!r}: {exc}") from None
        self.softening = ic.softening
        self.clip = ic.clip
        self.residual = ic.residual
        self.num_features = int(self.backbone.num_features)
        self.representation_stages = int(ic.representation_stages)
        if self.representation_stages < 1:
            raise ConfigError(f"image.representation_stages must be >= 1, got {self.representation_stages}")
        if self.representation_stages > 1 and not hasattr(self.backbone, "forward_intermediates"):
            raise ConfigError(f"image.representation_stages > 1 needs a timm backbone with "
                              f"forward_intermediates ({ic.backbone!r} has none)")
        self.eval_views = int(ic.eval_views)
        if not 1 <= self.eval_views <= 8:
            raise ConfigError(f"image.eval_views must be 1-8 (flips/90° rotations), got {self.eval_views}")
        self.representation_width = (self.num_features if self.representation_stages == 1 else
                                      self._stage_width(cfg.image_size))

    def stretch(self, image: Tensor) -> Tensor:
        return arcsinh_stretch(image, self.softening, self.clip)

    def inputs(self, image: Tensor) -> Tensor:
        """What the backbone sees: the stretched bands (+ their rotational residuals)."""
        x = self.stretch(image)
        if self.residual:  # rot180 about the cutout centre commutes with the 90° rotations/flips
            x = torch.cat([x, x - torch.rot90(x, 2, (-2, -1))], dim=1)
        return x

    def tokens(self, image: Tensor) -> Tensor:
        """(N, T, F) tokens: ViT sequence as is, CNN feature maps flattened over space."""
        x = self.backbone.forward_features(self.inputs(image))
        if x.ndim == 4:  # (N, C, H, W) → (N, HW, C)
            x = x.flatten(2).transpose(1, 2)
        return x

    def _views(self) -> int:
        return 1 if self.training else self.eval_views

    def forward(self, image: Tensor) -> Tensor:
        if self._views() > 1:
            return self.pooled(image)[0]
        x = self.backbone.forward_features(self.inputs(image))
        return self.backbone.forward_head(x, pre_logits=True)

    def pooled(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """One backbone pass → (final pooled features, representation features).

        The representation features are the final pooled features, or with
        ``representation_stages`` = k > 1 the global averages of the last k stages' outputs
        side by side (timm ``forward_intermediates``). In eval mode with ``eval_views`` > 1,
        both are averaged over that many flips/rotations of the cutout.
        """
        if self._views() > 1:
            pairs = [self._pooled_once(dihedral(image, k)) for k in range(self._views())]
            return torch.stack([p[0] for p in pairs]).mean(0), torch.stack([p[1] for p in pairs]).mean(0)
        return self._pooled_once(image)

    def _pooled_once(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = self.inputs(image)
        if self.representation_stages == 1:
            f = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
            return f, f
        final, stages = self.backbone.forward_intermediates(x, indices=self.representation_stages)
        f = self.backbone.forward_head(final, pre_logits=True)
        return f, torch.cat([_global_pool(s) for s in stages[:-1]] + [f], dim=1)

    @torch.no_grad()
    def _stage_width(self, size: int) -> int:
        was = self.training
        self.eval()
        _, r = self.pooled(torch.zeros(1, self.n_bands, size, size))
        self.train(was)
        return int(r.shape[1])


def dihedral(x: Tensor, k: int) -> Tensor:
    """The k-th (0-7) of the 8 flips/90° rotations of (..., H, W) images: k mod 4 quarter
    turns, then a left-right flip for k >= 4."""
    x = torch.rot90(x, k % 4, (-2, -1))
    return torch.flip(x, (-1,)) if k >= 4 else x


def _global_pool(x: Tensor) -> Tensor:
    """(N, C, H, W) feature map or (N, T, C) tokens → (N, C) mean."""
    return x.mean((2, 3)) if x.ndim == 4 else x.mean(1)


def _good(ivar: Tensor) -> Tensor:
    """Valid-pixel mask (float) from ivar: 0, NaN or negative → bad."""
    return (torch.nan_to_num(ivar, nan=0.0) > 0).to(ivar.dtype if ivar.is_floating_point() else torch.float32)


class ConvSpectrumTower(nn.Module):
    """Strided 1-D CNN over (flux, valid-mask) channels with masked mean pooling.

    Bad pixels (ivar = 0) are zeroed in the flux channel and flagged in the mask channel,
    and the final pooling averages only positions whose receptive field saw a good pixel,
    so a masked region can never dominate the features.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sc = cfg.spectrum
        depth = max(1, sc.depth)
        chans = [max(8, sc.width // 2 ** (depth - 1 - i)) for i in range(depth)]
        layers: list[nn.Module] = []
        cin = 2
        for c in chans:
            layers += [nn.Conv1d(cin, c, sc.kernel_size, stride=2, padding=sc.kernel_size // 2),
                       nn.GroupNorm(math.gcd(c, max(1, sc.norm_groups)), c), nn.GELU()]
            if sc.dropout > 0:
                layers.append(nn.Dropout(sc.dropout))
            cin = c
        self.net = nn.Sequential(*layers)
        self.depth = depth
        self.norm = nn.LayerNorm(cin)
        self.num_features = cin

    def _run(self, flux: Tensor, ivar: Tensor) -> tuple[Tensor, Tensor]:
        good = _good(ivar)
        x = torch.stack([torch.nan_to_num(flux) * good, good], dim=1)
        h = self.net(x).transpose(1, 2)  # (N, T, C)
        m = good[:, None]
        for _ in range(self.depth):
            m = F.max_pool1d(m, 3, stride=2, padding=1)
        m = m[:, 0, : h.shape[1]]
        return self.norm(h), m

    def tokens(self, flux: Tensor, ivar: Tensor) -> Tensor:
        return self._run(flux, ivar)[0]

    def forward(self, flux: Tensor, ivar: Tensor) -> Tensor:
        h, m = self._run(flux, ivar)
        w = m / m.sum(1, keepdim=True).clamp_min(1.0)
        return (h * w[..., None]).sum(1)


class PatchSpectrumTower(nn.Module):
    """Transformer over overlapping spectral patches (the AstroCLIP spectrum encoder idea).

    Each patch embeds its (masked) flux values together with its valid-pixel mask; patches
    without any good pixel are excluded from attention via the key-padding mask. A [CLS]
    token (never masked) gives the pooled features, so even an all-bad spectrum is finite.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sc = cfg.spectrum
        if sc.patch_stride < 1 or sc.patch_size < sc.patch_stride:
            raise ConfigError("spectrum.patch_stride must be in 1..patch_size")
        self.size, self.stride = sc.patch_size, sc.patch_stride
        length = max(cfg.spectrum_length, self.size)
        self.n_patches = math.ceil((length - self.size) / self.stride) + 1
        self.padded = (self.n_patches - 1) * self.stride + self.size
        self.length = cfg.spectrum_length
        self.embed = nn.Linear(2 * self.size, sc.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, sc.width))
        self.pos = nn.Parameter(torch.randn(1, self.n_patches + 1, sc.width) * 0.02)
        layer = nn.TransformerEncoderLayer(sc.width, sc.heads, 4 * sc.width, sc.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, sc.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(sc.width)
        self.num_features = sc.width

    def _run(self, flux: Tensor, ivar: Tensor) -> Tensor:
        good = _good(ivar)
        x = torch.nan_to_num(flux) * good
        pad = self.padded - x.shape[-1]
        if pad < 0:
            raise ValueError(f"spectrum has {x.shape[-1]} pixels, model expects {self.length}")
        x, good = F.pad(x, (0, pad)), F.pad(good, (0, pad))
        xp = x.unfold(-1, self.size, self.stride)  # (N, P, size)
        gp = good.unfold(-1, self.size, self.stride)
        tok = self.embed(torch.cat([xp, gp], dim=-1))
        tok = torch.cat([self.cls.expand(tok.shape[0], -1, -1), tok], dim=1) + self.pos
        pad_mask = torch.cat([torch.zeros_like(gp[:, :1, 0], dtype=torch.bool), gp.sum(-1) == 0], dim=1)
        return self.norm(self.encoder(tok, src_key_padding_mask=pad_mask))

    def tokens(self, flux: Tensor, ivar: Tensor) -> Tensor:
        return self._run(flux, ivar)

    def forward(self, flux: Tensor, ivar: Tensor) -> Tensor:
        return self._run(flux, ivar)[:, 0]


register_tower("conv1d")(ConvSpectrumTower)
register_tower("transformer")(PatchSpectrumTower)


@register_tower("tabular")
def _tabular_tower(cfg: ModelConfig) -> nn.Module:
    """``spectrum.kind: tabular``: the catalogue FT-Transformer (:mod:`galclip.models.tabular_tower`)."""
    from galclip.models.tabular_tower import TabularSecondTower

    return TabularSecondTower(cfg)
