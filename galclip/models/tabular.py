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

As GalClip's second tower (contrastive image ↔ catalogue pretraining), importing this
module registers ``spectrum.kind: tabular`` with :func:`galclip.models.towers.register_tower`::

    raw, names = dataset_table(train_ds)                     # training rows only
    cfg = with_tabular_tower(get_model_config("small"), raw, names)  # fits + stores the prep
    model = build_model(cfg)                                 # model.spectrum_encoder: TabularSecondTower
    x = model.spectrum_encoder.prepare(batch["tabular"], ds.tabular_names)
    z_img, z_tab, scale = model(batch["image"], x, None)     # projection + L2 norm as usual

``save_checkpoint``/``load_model`` carry the fitted preprocessing in ``model.json``.
From the command line (``galclip pretrain`` / ``galclip embed`` handle the rest)::

    galclip pretrain --data DIR model_options.spectrum.kind=tabular
    # optional: model_options.spectrum.options.columns=[halpha_flux,d4000,morph_gini]
    #           model_options.spectrum.options.prep_config.log_columns=[halpha_flux]

Catalogue-only self-supervised pretraining: :func:`scarf_pretrain`. Pretraining/embedding hooks:
:class:`TabularAsSpectrum` (a dataset view that puts the prepared catalogue row in the
spectrum slot, so the image↔spectrum trainer and ``embed_dataset`` run unchanged),
:func:`resolve_tabular_tower` (fit the preprocessing on the training rows; no-op for
spectrum towers), :func:`second_tower_inputs` (pick spectrum or catalogue inputs from a
batch), :func:`augment_tabular` (random-missing + jitter views).
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


# --------------------------------------------------------------------------- GalClip second tower
def _tower_options(cfg: Any) -> dict[str, Any]:
    opts = dict(cfg.spectrum.options or {})
    unknown = sorted(set(opts) - {"columns", "categorical", "prep", "prep_config", "ff_mult"})
    if unknown:
        raise ConfigError(f"spectrum.options.{unknown[0]} is not a tabular tower option "
                          "(valid: columns, categorical, prep, prep_config, ff_mult)")
    return opts


class TabularSecondTower(nn.Module):
    """:class:`TabularEncoder` in GalClip's second-tower slot (``spectrum.kind: tabular``).

    Built from a ``ModelConfig`` like the spectrum towers, so ``build_model``,
    ``save_checkpoint`` and ``load_model`` work unchanged: the sizes come from
    ``spectrum.width/depth/heads/dropout`` and ``spectrum.options`` holds ``columns``
    (required), ``categorical`` and the fitted preprocessor (``prep``, the JSON of
    :meth:`TabularPreprocessor.to_dict`), so the checkpoint's ``model.json`` carries the
    exact input transform used in training (see :func:`with_tabular_tower`).

    The spectrum-tower call signature is kept: ``forward(x, ivar=None)`` and
    ``tokens(x, ivar=None)`` take *prepared* values (:meth:`prepare`) in ``columns`` order;
    an optional ``ivar`` marks entries with ``ivar <= 0`` as missing.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        from galclip.data.tabular import TabularPreprocessor

        sc = cfg.spectrum
        opts = _tower_options(cfg)
        columns = [str(c) for c in opts.get("columns") or []]
        if not columns:
            raise ConfigError("spectrum.kind 'tabular' needs spectrum.options.columns (the catalogue columns)")
        self.prep = TabularPreprocessor.from_dict(opts["prep"]) if opts.get("prep") else None
        if self.prep is not None and self.prep.columns != columns:
            raise ConfigError("spectrum.options.prep was fitted on different columns than spectrum.options.columns")
        categorical = opts.get("categorical") or (self.prep.categorical if self.prep is not None else {})
        self.encoder = TabularEncoder(columns, dim=sc.width, depth=sc.depth, heads=sc.heads,
                                      categorical=categorical, dropout=sc.dropout, ff_mult=int(opts.get("ff_mult", 2)))
        self.num_features = self.encoder.num_features

    @property
    def columns(self) -> list[str]:
        return self.encoder.columns

    def prepare(self, raw: Tensor, columns: Sequence[str]) -> Tensor:
        """Raw catalogue values (e.g. a dataset batch's ``tabular``, named ``columns``) →
        standardised values in this tower's column order (NaN = missing)."""
        if self.prep is None:
            return self.encoder.reorder(raw, columns)
        return self.prep.transform_tensor(raw, columns).to(raw.dtype)

    @staticmethod
    def _mask(x: Tensor, ivar: Tensor | None) -> Tensor:
        if ivar is None:
            return x
        bad = ~(torch.nan_to_num(ivar, nan=0.0) > 0)
        return torch.where(bad, torch.full_like(x, float("nan")), x)

    def tokens(self, x: Tensor, ivar: Tensor | None = None) -> Tensor:
        return self.encoder.tokens(self._mask(x, ivar))

    def forward(self, x: Tensor, ivar: Tensor | None = None) -> Tensor:
        return self.encoder(self._mask(x, ivar))


def with_tabular_tower(cfg: Any, train_values: Any, columns: Sequence[str],
                       prep_cfg: Any = None, categorical: Mapping[str, int] | None = None) -> Any:
    """Copy of ``cfg`` (a ``ModelConfig``) whose second tower is the tabular encoder.

    Fits a :class:`~galclip.data.tabular.TabularPreprocessor` on ``train_values`` (N, K raw
    catalogue values of the *training* rows, e.g. from
    :func:`galclip.data.tabular.dataset_table`) and stores it in ``spectrum.options`` so
    it is saved in ``model.json`` and re-applied by :meth:`TabularSecondTower.prepare`.
    Sizes (``width/depth/heads/dropout``) are taken from ``cfg.spectrum``.
    """
    import dataclasses

    from galclip.data.tabular import TabularPrepConfig, TabularPreprocessor

    prep_cfg = prep_cfg or TabularPrepConfig()
    if categorical:
        prep_cfg = dataclasses.replace(prep_cfg, categorical={**prep_cfg.categorical, **dict(categorical)})
    prep = TabularPreprocessor(prep_cfg).fit(train_values, columns)
    options = {**(cfg.spectrum.options or {}), "columns": list(prep.columns), "categorical": prep.categorical,
               "prep": prep.to_dict()}
    # catalogue rows have no flux normalisation to feed back
    spectrum = dataclasses.replace(cfg.spectrum, kind="tabular", options=options, use_flux_scale=False)
    # the second-tower input length is the number of columns (embed/pretrain compatibility checks)
    return dataclasses.replace(cfg, spectrum=spectrum, spectrum_length=len(prep.columns))


def scarf_pretrain(encoder: TabularEncoder, x: Tensor, epochs: int = 30, batch_size: int = 256,
                   corrupt: float = 0.4, lr: float = 1e-3, temperature: float = 0.2, seed: int = 0,
                   columns: Sequence[str] | None = None) -> list[float]:
    """Self-supervised pretraining of ``encoder`` on unlabelled catalogue rows (SCARF).

    For astronomers with a catalogue and few labels (Bahri et al. 2022): each view replaces
    a random ``corrupt`` fraction of the entries by values drawn from the same column of
    other rows (its empirical marginal, missing values included), and the NT-Xent loss of
    ``lightly`` pulls the two views of a row together through a throw-away projection head.
    On the simulated survey, with 30 % of catalogue entries missing, a logistic regression on
    the SCARF features found mergers better than logistic regression on the raw columns at
    25-100 labels (ROC AUC ~0.68-0.70 vs <= 0.62), on par at 200; with complete catalogues
    it did not beat it (benchmarks/bench_tabular.py, results/tabular.json).

    Args:
        encoder: trained in place (left in eval mode).
        x: (N, K) prepared values (``TabularPreprocessor.transform``; NaN = missing).
        columns: names of ``x``'s columns (None: encoder order).
    Returns:
        Mean loss of each epoch.
    """
    from lightly.loss import NTXentLoss

    x = encoder.reorder(x, columns).float()
    n = x.shape[0]
    if n < 2:
        raise ConfigError("scarf_pretrain needs at least 2 rows")
    batch_size = min(batch_size, n)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    f = encoder.num_features
    proj = nn.Sequential(nn.Linear(f, 2 * f), nn.GELU(), nn.Linear(2 * f, f)).to(x.device)
    opt = torch.optim.AdamW([*encoder.parameters(), *proj.parameters()], lr=lr, weight_decay=1e-4)
    loss_fn = NTXentLoss(temperature=temperature)
    cols = torch.arange(x.shape[1], device=x.device)

    def view(xb: Tensor) -> Tensor:
        mask = (torch.rand(xb.shape, generator=g) < corrupt).to(x.device)
        donor = x[torch.randint(0, n, xb.shape, generator=g).to(x.device), cols]
        return torch.where(mask, donor, xb)

    history = []
    encoder.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        losses = []
        for i in range(0, n - batch_size + 1, batch_size):
            xb = x[perm[i:i + batch_size]]
            loss = loss_fn(proj(encoder(view(xb))), proj(encoder(view(xb))))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(sum(losses) / max(1, len(losses)))
    encoder.eval()
    return history


def resolve_tabular_tower(cfg: Any, dataset: Any, train_rows: Sequence[int] | None = None,
                          prep_cfg: Any = None) -> Any:
    """Pretraining hook: fit the tabular tower's preprocessing on the training rows.

    No-op (returns ``cfg``) unless ``cfg.spectrum.kind == "tabular"`` and no preprocessor
    is stored yet, so it can be called unconditionally after the train/val split::

        mcfg = resolve_tabular_tower(mcfg, full_dataset, train_idx)

    ``spectrum.options.columns`` (optional) selects catalogue columns; default: all of the
    dataset's tabular columns. ``spectrum.options.prep_config`` (optional, the fields of
    :class:`~galclip.data.tabular.TabularPrepConfig`, e.g. ``{log_columns: [...]}``) sets the
    preprocessing when ``prep_cfg`` is not given. A one-line ``InputFileError`` names the dataset when it has
    no (or not those) tabular columns.
    """
    if cfg.spectrum.kind != "tabular" or (cfg.spectrum.options or {}).get("prep"):
        return cfg
    from galclip.data.tabular import dataset_table

    opts = _tower_options(cfg)
    if prep_cfg is None and opts.get("prep_config"):
        from galclip.config import from_dict
        from galclip.data.tabular import TabularPrepConfig

        prep_cfg = from_dict(TabularPrepConfig, opts["prep_config"], prefix="spectrum.options.prep_config")
    view = dataset.subset(train_rows) if train_rows is not None else dataset
    raw, names = dataset_table(view, opts.get("columns") or None)
    return with_tabular_tower(cfg, raw, names, prep_cfg, categorical=opts.get("categorical"))


class TabularAsSpectrum(torch.utils.data.Dataset):
    """A survey view whose items carry the prepared catalogue row in the spectrum slot.

    Lets the existing image ↔ spectrum pretraining and embedding code train and use the
    tabular second tower unchanged: ``spectrum`` = standardised values in the tower's column
    order (0 where missing), ``spectrum_ivar`` = ``1 / jitter**2`` where present and 0 where
    missing (the tower turns ivar = 0 back into its learned missing token, and spectrum
    augmentations become sensible catalogue augmentations: masked windows hide random
    columns, noise jitters values by up to ``spectrum_noise × jitter`` robust sigmas),
    ``has_spectrum`` = the row has at least one valid value. Everything else (images,
    labels, ids) is the wrapped dataset's.

    Args:
        dataset: a :class:`~galclip.data.dataset.SurveyDataset` (or view) with tabular columns.
        cfg: the ``ModelConfig`` with the fitted tabular tower (:func:`resolve_tabular_tower`).
        jitter: noise scale (robust sigmas) that spectrum-noise augmentation may add.
    """

    def __init__(self, dataset: Any, cfg: Any, jitter: float = 0.1) -> None:
        from galclip.data.tabular import TabularPreprocessor

        opts = _tower_options(cfg)
        if cfg.spectrum.kind != "tabular" or not opts.get("prep"):
            raise ConfigError("TabularAsSpectrum needs a model config with a fitted tabular tower "
                              "(call resolve_tabular_tower first)")
        self.dataset, self.cfg_model, self.jitter = dataset, cfg, float(jitter)
        self.prep = TabularPreprocessor.from_dict(opts["prep"])
        self.columns = list(self.prep.columns)
        from galclip.data.tabular import resolve_columns

        resolve_columns(dataset.tabular_names, self.columns, getattr(dataset.cfg, "path", None))  # one-line error

    # dataset attributes used by pretraining / embedding
    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def spectrum_length(self) -> int:
        return len(self.columns)

    def __len__(self) -> int:
        return len(self.dataset)

    def _prepared(self, raw: Any) -> Any:
        import numpy as np

        x = self.prep.transform(np.asarray(raw, np.float64).reshape(-1, len(self.dataset.tabular_names)),
                                self.dataset.tabular_names)
        ok = np.isfinite(x)
        flux = np.where(ok, x, 0.0).astype(np.float32)
        ivar = np.where(ok, 1.0 / self.jitter ** 2, 0.0).astype(np.float32)
        return flux, ivar, ok.any(axis=1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        flux, ivar, present = self._prepared(item["tabular"].numpy())
        item.update(spectrum=torch.from_numpy(flux[0]), spectrum_ivar=torch.from_numpy(ivar[0]),
                    has_spectrum=bool(present[0]))
        return item

    def subset(self, indices: Sequence[int]) -> "TabularAsSpectrum":
        return TabularAsSpectrum(self.dataset.subset(indices), self.cfg_model, self.jitter)

    def column(self, name: str) -> Any:
        if name == "has_spectrum":
            from galclip.data.tabular import dataset_table

            raw, names = dataset_table(self.dataset)
            return self._prepared(raw)[2]
        return self.dataset.column(name)


def augment_tabular(x: Tensor, drop: float = 0.15, jitter: float = 0.05,
                    generator: torch.Generator | None = None) -> Tensor:
    """A random view of standardised catalogue rows for contrastive training.

    Each present entry is hidden (→ NaN, i.e. the learned missing token) with probability
    ``drop`` and the rest get Gaussian jitter of ``jitter`` robust sigmas — the tabular
    analogue of masking spectral pixels, and it teaches the encoder that any subset of
    columns can be absent. Categorical codes must not be jittered: pass ``jitter=0`` or
    jitter only numerical columns. Missing entries stay missing.
    """
    if drop <= 0 and jitter <= 0:
        return x
    u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    out = torch.where(u < drop, torch.full_like(x, float("nan")), x)
    if jitter > 0:
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        out = out + jitter * noise
    return out


def is_tabular_model(model: nn.Module) -> bool:
    """True when a GalClip's second tower is the tabular encoder (not a spectrum encoder)."""
    return isinstance(getattr(model, "spectrum_encoder", None), TabularSecondTower)


def second_tower_inputs(model: nn.Module, batch: Mapping[str, Any],
                        tabular_names: Sequence[str] | None = None
                        ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """``(x, ivar, scale, present)`` for ``model.encode_spectrum(x, ivar, scale)`` from a batch.

    The single place where pretraining and embedding pick the second modality: spectra
    (``spectrum``, ``spectrum_ivar``, ``spectrum_scale``, ``has_spectrum``) for spectrum
    towers; for the tabular tower the prepared catalogue row (``tabular`` named
    ``tabular_names``, i.e. ``dataset.tabular_names``), no ivar or scale, and ``present`` =
    the row has at least one valid value (all-missing rows still embed, but carry nothing to
    align with an image).
    """
    tower = getattr(model, "spectrum_encoder", None)
    if not isinstance(tower, TabularSecondTower):
        return batch["spectrum"], batch["spectrum_ivar"], batch.get("spectrum_scale"), batch["has_spectrum"].bool()
    if tabular_names is None or "tabular" not in batch:
        raise ConfigError("this model's second tower is tabular: pass the dataset's tabular_names "
                          "(and a dataset with tabular columns)")
    x = tower.prepare(batch["tabular"], tabular_names)
    return x, None, None, torch.isfinite(x).any(dim=1)


def _register() -> None:
    """Make ``spectrum.kind: tabular`` known to :func:`galclip.models.towers.build_tower`."""
    try:
        from galclip.models.towers import register_tower
    except ImportError:  # pragma: no cover - the models package is not installed/complete
        return
    register_tower("tabular")(TabularSecondTower)


_register()
