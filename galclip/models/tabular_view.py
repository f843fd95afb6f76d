"""A survey view that puts the prepared catalogue row in the spectrum slot.

With it the image ↔ spectrum pretraining trains the tabular second tower unchanged, and
the encode path sees the same ``has_spectrum`` semantics for both kinds of second tower.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from galclip.errors import ConfigError
from galclip.models.tabular_tower import tower_options


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

        opts = tower_options(cfg)
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
