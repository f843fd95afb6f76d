"""The tabular encoder as GalClip's second tower (contrastive image ↔ catalogue pretraining),
registered as ``spectrum.kind: tabular`` in :mod:`galclip.models.towers`::

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

Hooks for pretraining and embedding: :func:`resolve_tabular_tower` (fit the preprocessing on
the training rows; no-op for spectrum towers) and :func:`second_tower_inputs` (the one place
that picks spectrum or catalogue inputs from a batch).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from galclip.errors import ConfigError
from galclip.models.tabular import TabularEncoder


def tower_options(cfg: Any) -> dict[str, Any]:
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
        opts = tower_options(cfg)
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

    opts = tower_options(cfg)
    if prep_cfg is None and opts.get("prep_config"):
        from galclip.config import from_dict
        from galclip.data.tabular import TabularPrepConfig

        prep_cfg = from_dict(TabularPrepConfig, opts["prep_config"], prefix="spectrum.options.prep_config")
    view = dataset.subset(train_rows) if train_rows is not None else dataset
    raw, names = dataset_table(view, opts.get("columns") or None)
    return with_tabular_tower(cfg, raw, names, prep_cfg, categorical=opts.get("categorical"))


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
