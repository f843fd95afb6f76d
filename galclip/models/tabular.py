"""FT-Transformer encoder for catalogue measurements (Gorishniy et al. 2021).

Many astronomers hold catalogue columns (line fluxes/EWs, D4000, velocity dispersion,
stellar mass, SFR, redshift, Gini/M20/asymmetry/concentration/Sérsic index) rather than
spectra or pixels. :class:`TabularEncoder` embeds such a row so it can stand wherever the
spectrum encoder stands: as the second tower of contrastive pretraining
(:class:`TabularTower` adds the projection head and L2 normalisation) or as an extra
input to the fusion head (:meth:`TabularEncoder.tokens` for cross-attention,
:meth:`TabularEncoder.forward` for pooled features).

Design (why):

* one token per column. Numerical column ``j``: ``x_j * W_j + b_j`` of the standardised
  value (see :class:`galclip.data.tabular.TabularPreprocessor`); categorical column: an
  embedding table. A learned *column embedding* is added to say which feature a token is;
  there is no positional encoding, so the column order carries no information;
* columns are identified by **name**: the module holds its column list and
  ``forward(x, columns=names)`` reorders the input by name, so permuting input columns
  together with their names gives exactly the same output; unknown/absent names are a
  one-line :class:`~galclip.errors.ConfigError`;
* missing values are first class: a NaN / ±inf (or out-of-range categorical code) is
  replaced by a learned per-column "missing" token *before* any arithmetic, so NaN never
  reaches the transformer, the loss or the gradients; a [CLS] token always exists, so a
  row with every column missing still embeds;
* a small pre-norm :class:`torch.nn.TransformerEncoder` mixes the tokens; the [CLS] output
  (after a final LayerNorm) is the pooled feature vector.

Interface (stable; the fine-tuning fusion head builds on it)::

    enc = TabularEncoder(columns, dim=64, depth=2, heads=4, categorical={"survey": 3})
    enc(x)                    # (N, K) float, NaN = missing, columns in enc.columns order -> (N, F)
    enc(x, columns=names)     # any column order, reordered by name                     -> (N, F)
    enc.tokens(x, names)      # [CLS] + one token per column (enc.columns order)        -> (N, K+1, F)
    enc.num_features          # F (== dim)
    enc.config()              # JSON-safe kwargs: TabularEncoder(**enc.config()) rebuilds it

    tower = TabularTower(enc, embed_dim=128)   # contrastive tower
    tower(x, columns=names)   # (N, D) unit vectors (normalize=False: raw projections)
    tower.features(x, names)  # pooled pre-projection features (N, F)

Categorical columns take integer codes ``0..n-1`` as floats in ``x``; the encoder does not
standardise anything itself: feed it the output of ``TabularPreprocessor.transform``.

Where it plugs in: GalClip's second tower (``spectrum.kind: tabular``) is
:mod:`galclip.models.tabular_tower`; the catalogue dataset view used by pretraining and
embedding is :mod:`galclip.models.tabular_view`; catalogue-only SCARF pretraining and
tabular augmentations are in :mod:`galclip.pretrain.scarf`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galclip.errors import ConfigError


class TabularEncoder(nn.Module):
    """Name-keyed FT-Transformer over catalogue columns with learned missing tokens.

    Args:
        columns: column names (unique); the order defines ``tokens`` order only.
        dim: token width F (= ``num_features``).
        depth: transformer layers.
        heads: attention heads (must divide ``dim``).
        categorical: ``{column: n_categories}`` for integer-coded columns (all others are
            numerical).
        dropout: dropout inside the transformer layers.
        ff_mult: feed-forward width as a multiple of ``dim``.
    """

    def __init__(self, columns: Sequence[str], dim: int = 64, depth: int = 2, heads: int = 4,
                 categorical: Mapping[str, int] | None = None, dropout: float = 0.1, ff_mult: int = 2) -> None:
        super().__init__()
        columns = [str(c) for c in columns]
        categorical = {str(k): int(v) for k, v in (categorical or {}).items()}
        if not columns:
            raise ConfigError("TabularEncoder needs at least one column")
        if len(set(columns)) != len(columns):
            dup = sorted({c for c in columns if columns.count(c) > 1})[0]
            raise ConfigError(f"TabularEncoder: duplicate column {dup!r}")
        unknown = [c for c in categorical if c not in columns]
        if unknown:
            raise ConfigError(f"TabularEncoder: categorical column {unknown[0]!r} is not in columns")
        if any(n < 1 for n in categorical.values()):
            raise ConfigError("TabularEncoder: categorical columns need >= 1 category")
        if dim < 1 or depth < 0 or heads < 1 or dim % heads:
            raise ConfigError(f"TabularEncoder: need dim divisible by heads (dim={dim}, heads={heads}), depth >= 0")
        self.columns = columns
        self.categorical = categorical
        self.dim, self.depth, self.heads = int(dim), int(depth), int(heads)
        self.dropout, self.ff_mult = float(dropout), int(ff_mult)
        self._pos = {c: i for i, c in enumerate(columns)}
        is_cat = [c in categorical for c in columns]
        self.register_buffer("_num_idx", torch.tensor([i for i, c in enumerate(is_cat) if not c], dtype=torch.long),
                             persistent=False)
        self.register_buffer("_cat_idx", torch.tensor([i for i, c in enumerate(is_cat) if c], dtype=torch.long),
                             persistent=False)
        k, kn = len(columns), int(self._num_idx.numel())
        # Per-column linear embedding of the standardised value (FT-Transformer init).
        bound = dim ** -0.5
        self.num_weight = nn.Parameter(torch.empty(kn, dim).uniform_(-bound, bound))
        self.num_bias = nn.Parameter(torch.empty(kn, dim).uniform_(-bound, bound))
        cat_cols = [c for c in columns if c in categorical]
        sizes = [categorical[c] for c in cat_cols]
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("_cat_offsets", offsets, persistent=False)
        self.register_buffer("_cat_sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.cat_embed = nn.Embedding(max(1, sum(sizes)), dim)
        nn.init.normal_(self.cat_embed.weight, std=0.02)
        self.missing_token = nn.Parameter(torch.randn(k, dim) * 0.02)
        self.column_embed = nn.Parameter(torch.randn(k, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff_mult * dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth else nn.Identity()
        self.norm = nn.LayerNorm(dim)

    @property
    def num_features(self) -> int:
        """Width of the pooled features and of every token."""
        return self.dim

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor kwargs (saved with checkpoints)."""
        return {"columns": list(self.columns), "dim": self.dim, "depth": self.depth, "heads": self.heads,
                "categorical": dict(self.categorical), "dropout": self.dropout, "ff_mult": self.ff_mult}

    def reorder(self, x: Tensor, columns: Sequence[str] | None) -> Tensor:
        """Put ``x``'s columns (named ``columns``) into this encoder's column order."""
        if x.dim() != 2:
            raise ConfigError(f"tabular input must be (N, K), got shape {tuple(x.shape)}")
        if columns is None:
            if x.shape[1] != len(self.columns):
                raise ConfigError(f"tabular input has {x.shape[1]} columns, encoder expects {len(self.columns)} "
                                  f"({', '.join(self.columns)}); pass columns= to select by name")
            return x
        columns = [str(c) for c in columns]
        if len(columns) != x.shape[1]:
            raise ConfigError(f"tabular input has {x.shape[1]} columns but {len(columns)} names were given")
        pos = {c: i for i, c in enumerate(columns)}
        if len(pos) != len(columns):
            raise ConfigError("tabular input has duplicate column names")
        unknown = [c for c in columns if c not in self._pos]
        if unknown:
            raise ConfigError(f"unknown tabular column {unknown[0]!r} (encoder columns: {', '.join(self.columns)})")
        absent = [c for c in self.columns if c not in pos]
        if absent:
            raise ConfigError(f"missing tabular column {absent[0]!r} (pass NaN for unmeasured values)")
        if columns == self.columns:
            return x
        return x[:, torch.tensor([pos[c] for c in self.columns], device=x.device)]

    def tokens(self, x: Tensor, columns: Sequence[str] | None = None) -> Tensor:
        """[CLS] + one contextualised token per column: (N, K+1, F), columns in ``self.columns`` order."""
        x = self.reorder(x, columns).to(self.num_weight.dtype)
        n, k = x.shape[0], len(self.columns)
        missing = ~torch.isfinite(x)
        safe = torch.where(missing, torch.zeros_like(x), x)  # NaN must never enter arithmetic (0*NaN = NaN)
        tok = x.new_zeros(n, k, self.dim)
        if self._num_idx.numel():
            v = safe[:, self._num_idx]
            tok[:, self._num_idx] = v.unsqueeze(-1) * self.num_weight + self.num_bias
        if self._cat_idx.numel():
            c = safe[:, self._cat_idx]
            code = c.round().long()
            bad = (code < 0) | (code >= self._cat_sizes) | (c != c.round())
            missing[:, self._cat_idx] |= bad
            code = torch.where(bad, torch.zeros_like(code), code) + self._cat_offsets
            tok[:, self._cat_idx] = self.cat_embed(code)
        tok = torch.where(missing.unsqueeze(-1), self.missing_token.expand(n, k, self.dim), tok)
        tok = tok + self.column_embed
        tok = torch.cat([self.cls_token.expand(n, 1, self.dim), tok], dim=1)
        return self.norm(self.transformer(tok))

    def forward(self, x: Tensor, columns: Sequence[str] | None = None) -> Tensor:
        """Pooled [CLS] features (N, F) of rows ``x`` (N, K) (NaN = missing)."""
        return self.tokens(x, columns)[:, 0]


class TabularTower(nn.Module):
    """Contrastive tower: tabular encoder → projection head → (optionally) L2 normalisation.

    Args:
        encoder: the :class:`TabularEncoder`.
        embed_dim: shared embedding width D (same as the image/spectrum towers).
        hidden_dim: width of the two-layer projection MLP (None: linear projection).
    """

    def __init__(self, encoder: TabularEncoder, embed_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.embed_dim = int(embed_dim)
        f = encoder.num_features
        if hidden_dim:
            self.projection: nn.Module = nn.Sequential(nn.Linear(f, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
        else:
            self.projection = nn.Linear(f, embed_dim)

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    def features(self, x: Tensor, columns: Sequence[str] | None = None) -> Tensor:
        """Pooled pre-projection features (N, F)."""
        return self.encoder(x, columns)

    def forward(self, x: Tensor, columns: Sequence[str] | None = None, normalize: bool = True) -> Tensor:
        """Embeddings (N, D); unit vectors when ``normalize``."""
        z = self.projection(self.encoder(x, columns))
        return F.normalize(z, dim=-1) if normalize else z
