"""The GalClip dual encoder: image tower + spectrum tower → shared unit-norm embeddings."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galclip.errors import ConfigError
from galclip.models.config import ModelConfig
from galclip.models.towers import ImageTower, build_tower


def projection_head(in_dim: int, out_dim: int, hidden: int) -> nn.Module:
    """Linear map (CLIP) or a 2-layer MLP when ``hidden > 0``."""
    if hidden <= 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class FluxScaleEmbedding(nn.Module):
    """log10 flux scale of a normalised spectrum → a feature vector added to the tower's.

    Spectra are divided by their median flux (the tower sees shape); this puts the
    apparent brightness back as a separate input. NaN (unknown scale: not flux calibrated,
    or dropped as an augmentation) selects a learned "unknown" vector instead.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, width), nn.GELU(), nn.Linear(width, width))
        self.unknown = nn.Parameter(torch.zeros(width))

    def forward(self, log_scale: Tensor | None, like: Tensor) -> Tensor:
        """(N, width) vectors for the N rows of ``like`` (whose dtype they take)."""
        n = like.shape[0]
        if log_scale is None:
            return self.unknown.to(like.dtype).expand(n, -1)
        s = log_scale.reshape(n, 1).to(like.dtype)
        known = torch.isfinite(s)
        emb = self.mlp(torch.where(known, s, torch.zeros_like(s)).clamp(-5.0, 5.0))
        return torch.where(known, emb, self.unknown.to(like.dtype).expand(n, -1))


class FeatureStandardizer(nn.Module):
    """Running statistics of pooled tower features → a fixed standardised PCA projection.

    Pooled CNN features are non-negative and dominated by a few high-variance channels, so
    cosine similarity on them mostly measures overall brightness. Standardised per channel
    every channel counts; projected on the leading principal components of the standardised
    features (statistics tracked during pretraining, stored with the weights) the hundreds
    of weak, noisy directions no longer decide who is whose nearest neighbour — which is
    what kNN labeling and candidate ranking from a handful of examples need (Jégou & Chum
    2012 for PCA before retrieval; ``benchmarks/results/representation_gz1.json``). Unlike
    ``BatchNorm`` it never uses batch statistics, so fine-tuning with batches of 8 cannot
    change the representation. A model that never saw data (count 0) gives the plain features.
    """

    def __init__(self, width: int, n_components: int = 64, momentum: float = 0.02) -> None:
        super().__init__()
        self.momentum = momentum
        self.n_components = min(n_components, width)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("var", torch.ones(width))
        self.register_buffer("second", torch.zeros(width, width))  # E[z zᵀ] of standardised features
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._basis: tuple[int, Tensor] | None = None

    @property
    def width(self) -> int:
        """Output width: the principal components once statistics exist, else the features."""
        return self.n_components if int(self.count) > 0 else int(self.mean.shape[0])

    @torch.no_grad()
    def update(self, features: Tensor) -> None:
        """Fold a training batch's statistics into the running ones (exponential average)."""
        f = features.detach().float()
        if f.shape[0] < 2:
            return
        m = 1.0 if int(self.count) == 0 else self.momentum
        self.mean.lerp_(f.mean(0), m)
        self.var.lerp_(f.var(0), m)
        z = self._standardise(f)
        with torch.autocast(f.device.type, enabled=False):  # fp32 statistics under bf16 autocast
            self.second.lerp_(z.T @ z / z.shape[0], m)
        self.count += 1
        self._basis = None

    @torch.no_grad()
    def fit(self, features: Tensor) -> None:
        """Exact statistics of ``features`` (N, F) in place of running ones: the same read-out
        for a model that never trained (the random-init baseline) as pretraining gives its own."""
        if features.shape[0] < 2:
            raise ValueError(f"FeatureStandardizer.fit needs at least 2 rows, got {features.shape[0]}")
        self.count.zero_()  # a first update takes its batch's statistics whole
        self.update(features.to(self.mean.device))

    def _standardise(self, f: Tensor) -> Tensor:
        return (f - self.mean.to(f.dtype)) * torch.rsqrt(self.var.to(f.dtype) + 1e-5)

    def basis(self) -> Tensor:
        """(F, k) leading eigenvectors of the running correlation matrix (cached until updated)."""
        key = int(self.count)
        if self._basis is None or self._basis[0] != key or self._basis[1].device != self.second.device:
            evals, evecs = torch.linalg.eigh(self.second.double())
            order = torch.argsort(evals, descending=True)[: self.n_components]
            vecs = evecs[:, order]
            vecs = vecs * torch.where(vecs.sum(0) < 0, -1.0, 1.0)  # a fixed sign per component
            self._basis = (key, vecs.to(self.second.dtype))
        return self._basis[1]

    def forward(self, features: Tensor) -> Tensor:
        if int(self.count) == 0:
            return features
        return self._standardise(features) @ self.basis().to(features.dtype)


class GalClip(nn.Module):
    """CLIP-style model for galaxies.

    Inputs are dataset batches: ``image`` (N,B,H,W) in noise units (the stretch happens
    inside), ``flux``/``ivar`` (N,L) with ivar = 0 on bad pixels, and — for models with
    ``spectrum.use_flux_scale`` — ``scale`` (N,) = log10 of each spectrum's normalisation
    (the batch key ``spectrum_scale``). Both towers always exist, so an image-only survey
    still yields a complete, loadable model.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.image_encoder = ImageTower(cfg)
        self.spectrum_encoder = build_tower(cfg)
        self.flux_scale = (FluxScaleEmbedding(self.spectrum_encoder.num_features)
                           if cfg.spectrum.use_flux_scale else None)
        self.image_proj = projection_head(self.image_encoder.num_features, cfg.embed_dim, cfg.proj_hidden)
        self.spectrum_proj = projection_head(self.spectrum_encoder.num_features, cfg.embed_dim, cfg.proj_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        if cfg.image.representation_components < 1:
            raise ConfigError(f"image.representation_components must be >= 1, got "
                              f"{cfg.image.representation_components}")
        self.image_standardizer = FeatureStandardizer(self.image_encoder.representation_width,
                                                      cfg.image.representation_components)

    # -- image -------------------------------------------------------------------------
    def image_tokens(self, image: Tensor) -> Tensor:
        """(N, T, Fi) backbone tokens for cross-attention fusion."""
        return self.image_encoder.tokens(image)

    def image_features(self, image: Tensor) -> Tensor:
        """(N, Fi) pooled features before the projection head."""
        return self.image_encoder(image)

    def image_pooled(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """One backbone pass → (pooled features for the projection and the pretraining heads,
        the features :meth:`represent` reads; the same tensor unless
        ``image.representation_stages`` > 1)."""
        return self.image_encoder.pooled(image)

    @property
    def representation_dim(self) -> int:
        """Width of :meth:`image_representation` (``image.representation_components`` principal
        components after pretraining)."""
        return self.image_standardizer.width

    def image_representation(self, image: Tensor) -> Tensor:
        """(N, k) unit vectors of the standardised pooled features on their leading principal
        components (:class:`FeatureStandardizer`): the representation that
        carries morphology (measured in ``benchmarks/bench_representation.py``), used by the
        heads, kNN labeling and candidate ranking. The projection output (:meth:`encode_image`)
        is what aligns with spectra, for cross-modal search."""
        return self.represent(self.image_encoder.pooled(image)[1])

    def represent(self, features: Tensor) -> Tensor:
        """:meth:`image_representation` from the representation features of
        :meth:`image_pooled` (one backbone pass serves both this and the projection)."""
        return F.normalize(self.image_standardizer(features), dim=-1)

    def encode_image(self, image: Tensor, normalize: bool = True) -> Tensor:
        return self.project_image(self.image_encoder(image), normalize)

    def project_image(self, features: Tensor, normalize: bool = True) -> Tensor:
        """The CLIP embedding from already pooled features (see :meth:`represent`)."""
        z = self.image_proj(features)
        return F.normalize(z, dim=-1) if normalize else z

    # -- spectrum ----------------------------------------------------------------------
    def spectrum_tokens(self, flux: Tensor, ivar: Tensor | None, scale: Tensor | None = None) -> Tensor:
        """(N, T, Fs) tower tokens (the flux-scale vector, if used, is added to each)."""
        tok = self.spectrum_encoder.tokens(flux, ivar)
        if self.flux_scale is not None:
            tok = tok + self.flux_scale(scale, tok)[:, None]
        return tok

    def spectrum_features(self, flux: Tensor, ivar: Tensor | None, scale: Tensor | None = None) -> Tensor:
        """(N, Fs) pooled features before the projection head."""
        h = self.spectrum_encoder(flux, ivar)
        if self.flux_scale is not None:
            h = h + self.flux_scale(scale, h)
        return h

    def encode_spectrum(self, flux: Tensor, ivar: Tensor | None, scale: Tensor | None = None,
                        normalize: bool = True) -> Tensor:
        z = self.spectrum_proj(self.spectrum_features(flux, ivar, scale))
        return F.normalize(z, dim=-1) if normalize else z

    # -- contrastive -------------------------------------------------------------------
    def scale(self) -> Tensor:
        """exp(logit_scale) clamped to ``max_logit_scale`` (no gradient past the clamp)."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, image: Tensor, flux: Tensor, ivar: Tensor,
                scale: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Unit image and spectrum embeddings plus the clamped logit scale."""
        return self.encode_image(image), self.encode_spectrum(flux, ivar, scale), self.scale()


def build_model(cfg: ModelConfig) -> GalClip:
    """Instantiate a randomly initialised :class:`GalClip` (no weights are downloaded)."""
    return GalClip(cfg)
