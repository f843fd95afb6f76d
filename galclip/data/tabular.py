"""Catalogue-measurement preprocessing for the tabular encoder.

Astronomers often hold catalogue columns derived from spectra and images (MPA-JHU-style
line fluxes and equivalent widths, D4000, velocity dispersion, stellar mass, SFR,
redshift; Gini, M20, asymmetry, concentration, Sérsic index) rather than the pixels.
Those columns have wildly different units and dynamic ranges, heavy tails, sentinel
values (``-9999``) for failed measurements and outright absurd entries. A
:class:`TabularPreprocessor` turns them into well-behaved model inputs:

1. **Missing first**: NaN, ±inf, configured sentinels, values outside a per-column
   ``valid_range`` and ``|x| > absurd`` all become NaN. NaN means *missing* downstream
   (the encoder replaces it by a learned per-column token; it is never zero-filled).
2. **Log** of positive-definite quantities: the configured ``log_columns``, or, when
   ``log_columns`` is None and ``auto_log`` is true, every column whose finite training
   values are all > 0, span ``p95/p5 >= log_dynamic_range`` and become more symmetric in
   log (quantile skewness ``(p95 - 2 p50 + p5) / (p95 - p5)`` shrinks): fluxes, EWs,
   linear masses, not D4000 or concentration. Quantiles, so a few absurd outliers do not
   trigger it. A non-positive value in
   a log column (a non-detection) is floored at the smallest positive training value.
   Signed heavy-tailed quantities (line fluxes and EWs measured on noisy spectra scatter
   below zero) get ``asinh(x / s)`` instead (Lupton et al. 1999 "asinh magnitudes": linear
   within the softening ``s`` = the column's robust sigma, logarithmic beyond): the
   configured ``asinh_columns``, or, auto-detected, columns with non-positive values
   whose median lies within one 5-95 % width of zero (zero is a natural point of the
   scale: not M20, which sits far below it) and whose 2.5/97.5 % tail reaches
   ``asinh_tail`` robust sigmas from the median.
3. **Robust standardisation**: ``(x - median) / (IQR / 1.349)`` (Gaussian-sigma units,
   insensitive to outliers); fallbacks to the standard deviation, then 1, for degenerate
   columns.
4. **Clipping** of the standardised value to ``[-clip, clip]``.

Categorical columns (``categorical={name: n_categories}``) are passed through as integer
codes; non-integer or out-of-range codes become missing.

The statistics are fitted on training rows only and saved as plain JSON (``to_dict`` /
``from_dict`` / ``save`` / ``load``; never pickle) next to the model, so inference applies
exactly the same transform. Columns are always identified by *name*: ``transform`` reorders
the input to the fitted column order and refuses unknown or absent columns with a one-line
error (``ConfigError``, or ``InputFileError`` naming ``source`` when given).

Typical use::

    prep = TabularPreprocessor(TabularPrepConfig(log_columns=None)).fit(train_x, names)
    x = prep.transform(batch_x, names)          # (N, K) float32, NaN = missing
    prep.save(run_dir / "tabular_prep.json")
    prep = TabularPreprocessor.load(run_dir / "tabular_prep.json")
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from galclip.errors import ConfigError, InputFileError
from galclip.utils.io import atomic_write_json

log = logging.getLogger(__name__)

FORMAT = "galclip.tabular_prep"
VERSION = 1
_IQR_TO_SIGMA = 1.349  # IQR of a unit Gaussian


@dataclasses.dataclass
class TabularPrepConfig:
    """How catalogue columns are cleaned and scaled (YAML-friendly).

    Attributes:
        columns: columns to use, in any order (None: all tabular columns of the dataset).
        log_columns: columns to log-transform; None means auto-detect (see ``auto_log``).
        asinh_columns: columns to transform with ``asinh(x / robust sigma)``; None means
            auto-detect signed heavy-tailed columns (when ``auto_log``).
        auto_log: when ``log_columns`` is None, log columns whose finite training values
            are all positive, span ``p95/p5 >= log_dynamic_range`` and are right-skewed
            (log makes them more symmetric): fluxes, EWs, masses in linear units.
        log_dynamic_range: dynamic-range threshold of the auto-detection.
        asinh_tail: tail length (robust sigmas) above which a signed column gets asinh.
        clip: standardised values are clipped to ``[-clip, clip]`` robust sigmas.
        absurd: raw ``|x|`` above this is treated as missing (corrupt entries, 1e37 fill).
        sentinels: raw values that mean "measurement failed" (→ missing).
        valid_range: per-column ``[lo, hi]``; raw values outside → missing.
        categorical: ``{column: n_categories}``; integer codes ``0..n-1`` pass through.
    """

    columns: list[str] | None = None
    log_columns: list[str] | None = None
    asinh_columns: list[str] | None = None
    auto_log: bool = True
    log_dynamic_range: float = 5.0
    asinh_tail: float = 5.0
    clip: float = 10.0
    absurd: float = 1e30
    sentinels: list[float] = dataclasses.field(default_factory=lambda: [-9999.0, -999.0, -99.0])
    valid_range: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    categorical: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clip <= 0 or not math.isfinite(self.clip):
            raise ConfigError(f"tabular.clip must be a positive number, got {self.clip!r}")
        if self.log_dynamic_range <= 1:
            raise ConfigError(f"tabular.log_dynamic_range must be > 1, got {self.log_dynamic_range!r}")
        for name, rng in self.valid_range.items():
            if len(rng) != 2 or not float(rng[0]) < float(rng[1]):
                raise ConfigError(f"tabular.valid_range.{name} must be [lo, hi] with lo < hi, got {rng!r}")
        for name, n in self.categorical.items():
            if int(n) < 1:
                raise ConfigError(f"tabular.categorical.{name} must be >= 1 categories, got {n!r}")
        sets = [set(self.categorical), set(self.log_columns or ()), set(self.asinh_columns or ())]
        both = (sets[0] & sets[1]) | (sets[0] & sets[2]) | (sets[1] & sets[2])
        if both:
            raise ConfigError(f"tabular column {sorted(both)[0]!r} is in more than one of categorical, "
                              "log_columns, asinh_columns")


@dataclasses.dataclass
class ColumnStats:
    """Fitted transform of one numerical column."""

    log: bool
    center: float
    scale: float
    floor: float | None  # smallest positive training value (log columns only)
    n_fit: int  # finite training values the statistics came from
    missing_frac: float
    asinh: float | None = None  # softening of asinh(x / asinh) (asinh columns only)


def _skew(v: np.ndarray) -> float:
    """Quantile (Bowley-type, 5/50/95 %) skewness in [-1, 1]; robust to outliers."""
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return float((p95 - 2 * p50 + p5) / (p95 - p5)) if p95 > p5 else 0.0


def _robust_sigma(v: np.ndarray) -> float:
    """IQR / 1.349 (a Gaussian's sigma); falls back to the std, then 1, for degenerate columns."""
    q1, q3 = np.percentile(v, [25, 75])
    scale = float((q3 - q1) / _IQR_TO_SIGMA)
    if not scale > 0:
        scale = float(np.std(v))
    return scale if scale > 0 and math.isfinite(scale) else 1.0


def _tail(v: np.ndarray) -> float:
    """Longest 2.5/97.5 % tail from the median, in robust sigmas (heavy tails ≫ 2)."""
    p2, p50, p97 = np.percentile(v, [2.5, 50, 97.5])
    return float(max(p97 - p50, p50 - p2) / _robust_sigma(v))


def _where(source: str | Path | None, reason: str) -> Exception:
    return InputFileError(source, reason) if source is not None else ConfigError(reason)


def resolve_columns(given: Sequence[str], wanted: Sequence[str], source: str | Path | None = None,
                    allow_absent: bool = False) -> np.ndarray:
    """Index array taking ``given``-ordered columns to ``wanted`` order (-1 = absent).

    Raises a one-line error for duplicate names, for ``wanted`` columns that ``given``
    lacks (unless ``allow_absent``), and never silently ignores a typo.
    """
    given = [str(c) for c in given]
    dup = sorted({c for c in given if given.count(c) > 1})
    if dup:
        raise _where(source, f"duplicate tabular column {dup[0]!r}")
    pos = {c: i for i, c in enumerate(given)}
    absent = [c for c in wanted if c not in pos]
    if absent and not allow_absent:
        raise _where(source, f"missing tabular column {absent[0]!r} ({len(absent)} absent; "
                             f"have: {', '.join(given) or 'none'})")
    return np.asarray([pos.get(c, -1) for c in wanted], dtype=np.int64)


class TabularPreprocessor:
    """Robust, name-keyed, JSON-serialisable transform of catalogue columns.

    Args:
        cfg: cleaning/scaling options (defaults are sensible for MPA-JHU-like tables).
    """

    def __init__(self, cfg: TabularPrepConfig | None = None) -> None:
        self.cfg = cfg or TabularPrepConfig()
        self.columns: list[str] = []
        self.stats: dict[str, ColumnStats] = {}

    # -- fitting ------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return bool(self.columns)

    @property
    def categorical(self) -> dict[str, int]:
        """``{column: n_categories}`` of the fitted columns (what the encoder needs)."""
        return {c: int(n) for c, n in self.cfg.categorical.items() if c in self.columns}

    @property
    def log_columns(self) -> list[str]:
        """Columns that are log-transformed (configured or auto-detected)."""
        return [c for c in self.columns if c in self.stats and self.stats[c].log]

    @property
    def asinh_columns(self) -> list[str]:
        """Columns that are asinh-transformed (configured or auto-detected)."""
        return [c for c in self.columns if c in self.stats and self.stats[c].asinh is not None]

    def fit(self, x: np.ndarray, columns: Sequence[str], source: str | Path | None = None) -> "TabularPreprocessor":
        """Fit per-column statistics on *training* rows ``x`` (N, K) named by ``columns``."""
        x = self._as_2d(x, columns, source)
        cfg = self.cfg
        use = list(cfg.columns) if cfg.columns is not None else [str(c) for c in columns]
        if not use:
            raise _where(source, "no tabular columns to fit")
        idx = resolve_columns(columns, use, source)
        for name in [*(cfg.log_columns or []), *(cfg.asinh_columns or []), *cfg.categorical, *cfg.valid_range]:
            if name not in use:
                raise _where(source, f"configured tabular column {name!r} is not among the columns {use}")
        self.columns = use
        self.stats = {}
        for j, name in enumerate(use):
            if name in cfg.categorical:
                continue
            raw = self._clean(x[:, idx[j]], name)
            self.stats[name] = self._fit_column(raw, name)
        return self

    def _fit_column(self, raw: np.ndarray, name: str) -> ColumnStats:
        cfg = self.cfg
        n = raw.size
        fin = raw[np.isfinite(raw)]
        missing_frac = float(1 - fin.size / n) if n else 1.0
        if fin.size == 0:
            log.warning("tabular column %r has no valid training values; it will always be 'missing'", name)
            return ColumnStats(log=False, center=0.0, scale=1.0, floor=None, n_fit=0, missing_frac=missing_frac)
        if cfg.log_columns is not None or name in (cfg.asinh_columns or ()):
            do_log = name in (cfg.log_columns or ())
        else:
            do_log = bool(cfg.auto_log and fin.size >= 10 and fin.min() > 0
                          and np.percentile(fin, 95) >= cfg.log_dynamic_range * np.percentile(fin, 5)
                          and abs(_skew(np.log10(fin))) < abs(_skew(fin)))
        floor = asinh = None
        if cfg.asinh_columns is not None:
            do_asinh = name in cfg.asinh_columns
        else:
            p5, p50, p95 = np.percentile(fin, [5, 50, 95])
            do_asinh = bool(cfg.auto_log and not do_log and fin.size >= 20 and fin.min() <= 0
                            and abs(p50) < p95 - p5 and _tail(fin) >= cfg.asinh_tail)
        if do_asinh:
            asinh = _robust_sigma(fin)
            fin = np.arcsinh(fin / asinh)
        if do_log:
            pos = fin[fin > 0]
            if pos.size == 0:
                raise ConfigError(f"tabular column {name!r} is configured as log but has no positive training values")
            floor = float(pos.min())
            fin = np.log10(np.maximum(fin, floor))
        return ColumnStats(log=do_log, center=float(np.median(fin)), scale=_robust_sigma(fin), floor=floor,
                           n_fit=int(fin.size), missing_frac=missing_frac, asinh=asinh)

    # -- applying -----------------------------------------------------------------------
    def _clean(self, v: np.ndarray, name: str) -> np.ndarray:
        """Raw column → float64 with every kind of 'missing' turned into NaN."""
        v = np.array(v, dtype=np.float64, copy=True)
        bad = ~np.isfinite(v) | (np.abs(np.nan_to_num(v, nan=0.0)) > self.cfg.absurd)
        for s in self.cfg.sentinels:
            bad |= v == float(s)
        rng = self.cfg.valid_range.get(name)
        if rng is not None:
            with np.errstate(invalid="ignore"):
                bad |= (v < float(rng[0])) | (v > float(rng[1]))
        v[bad] = np.nan
        return v

    def transform(self, x: np.ndarray, columns: Sequence[str] | None = None, source: str | Path | None = None,
                  allow_absent: bool = False) -> np.ndarray:
        """Apply the fitted transform; returns (N, K_fitted) float32 in fitted column order.

        Args:
            x: (N, K_in) raw values (NaN / sentinels = missing).
            columns: names of ``x``'s columns (None: ``x`` is already in fitted order).
            source: file the values came from, named in errors.
            allow_absent: fill fitted columns that ``x`` lacks with NaN (missing) instead
                of raising; for catalogues that never measured some quantity.
        """
        if not self.fitted:
            raise ConfigError("tabular preprocessor is not fitted (call fit() or load a saved one)")
        if columns is None:
            columns = self.columns
        x = self._as_2d(x, columns, source)
        idx = resolve_columns(columns, self.columns, source, allow_absent=allow_absent)
        out = np.full((x.shape[0], len(self.columns)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.columns):
            if idx[j] < 0:
                continue
            v = self._clean(x[:, idx[j]], name)
            if name in self.cfg.categorical:
                n_cat = int(self.cfg.categorical[name])
                with np.errstate(invalid="ignore"):
                    ok = (v == np.round(v)) & (v >= 0) & (v < n_cat)
                out[:, j] = np.where(ok, v, np.nan)
                continue
            st = self.stats[name]
            if st.n_fit == 0:
                continue  # nothing learned: always missing
            if st.log:
                with np.errstate(invalid="ignore"):
                    v = np.log10(np.maximum(v, st.floor))
            elif st.asinh is not None:
                v = np.arcsinh(v / st.asinh)
            z = (v - st.center) / st.scale
            out[:, j] = np.clip(z, -self.cfg.clip, self.cfg.clip)
        return out

    def transform_tensor(self, x: Any, columns: Sequence[str] | None = None, allow_absent: bool = False) -> Any:
        """:meth:`transform` for a torch tensor batch (e.g. ``batch["tabular"]``); same device."""
        import torch

        out = self.transform(x.detach().cpu().numpy(), columns, allow_absent=allow_absent)
        return torch.from_numpy(out).to(x.device)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Standardised values (fitted order) → physical units (clipped values stay clipped)."""
        z = np.asarray(z, dtype=np.float64)
        out = np.array(z, copy=True)
        for j, name in enumerate(self.columns):
            st = self.stats.get(name)
            if st is None:
                continue
            v = z[:, j] * st.scale + st.center
            out[:, j] = 10.0 ** v if st.log else (np.sinh(v) * st.asinh if st.asinh is not None else v)
        return out

    @staticmethod
    def _as_2d(x: Any, columns: Sequence[str], source: str | Path | None) -> np.ndarray:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise _where(source, "tabular values are not numeric") from None
        if arr.ndim != 2:
            raise _where(source, f"tabular values must be a 2-D (rows, columns) array, got shape {arr.shape}")
        if arr.shape[1] != len(columns):
            raise _where(source, f"tabular array has {arr.shape[1]} columns but {len(columns)} names were given")
        return arr

    # -- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (no NaN/inf) holding config and fitted statistics."""
        if not self.fitted:
            raise ConfigError("tabular preprocessor is not fitted; nothing to save")
        return {
            "format": FORMAT,
            "version": VERSION,
            "columns": list(self.columns),
            "config": dataclasses.asdict(self.cfg),
            "stats": {name: dataclasses.asdict(st) for name, st in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None) -> "TabularPreprocessor":
        """Rebuild a fitted preprocessor from :meth:`to_dict` output (validated)."""
        from galclip.config import from_dict as cfg_from_dict

        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise _where(source, f"not a galclip tabular preprocessor (format != {FORMAT!r})")
        if int(d.get("version", -1)) > VERSION:
            raise _where(source, f"tabular preprocessor version {d.get('version')} is newer than supported {VERSION}")
        try:
            cfg = cfg_from_dict(TabularPrepConfig, d["config"], prefix="tabular")
            columns = [str(c) for c in d["columns"]]
            stats = {str(k): ColumnStats(**v) for k, v in d["stats"].items()}
        except (KeyError, TypeError, ConfigError) as exc:
            raise _where(source, f"malformed tabular preprocessor ({exc})") from None
        expected = [c for c in columns if c not in cfg.categorical]
        if sorted(stats) != sorted(expected) or not columns:
            raise _where(source, "malformed tabular preprocessor (statistics do not match the columns)")
        for name, st in stats.items():
            if not (math.isfinite(st.center) and math.isfinite(st.scale) and st.scale > 0):
                raise _where(source, f"malformed tabular preprocessor (bad statistics for {name!r})")
            if st.log and not (st.floor is not None and st.floor > 0):
                raise _where(source, f"malformed tabular preprocessor (log column {name!r} has no floor)")
            if st.asinh is not None and not (math.isfinite(st.asinh) and st.asinh > 0):
                raise _where(source, f"malformed tabular preprocessor (bad asinh softening for {name!r})")
        prep = cls(cfg)
        prep.columns = columns
        prep.stats = stats
        return prep

    def save(self, path: str | Path) -> Path:
        """Atomically write the JSON form to ``path``."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "TabularPreprocessor":
        """Read a preprocessor saved by :meth:`save` (one-line error naming the file)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputFileError(path, "tabular preprocessor file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFileError(path, f"cannot read tabular preprocessor ({exc.__class__.__name__})") from None
        return cls.from_dict(d, source=path)


def dataset_table(dataset: Any, columns: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Raw (N, K) tabular values of a :class:`~galclip.data.dataset.SurveyDataset` view.

    Reads whole columns (fast; no images or spectra are decoded) so a preprocessor can be
    fitted on the training subset only: ``prep.fit(*dataset_table(train_ds))``.
    """
    names = list(columns) if columns is not None else list(dataset.tabular_names)
    if not names:
        raise InputFileError(getattr(dataset.cfg, "path", "dataset"), "dataset has no tabular columns")
    have = set(dataset.tabular_names)
    absent = [c for c in names if c not in have]
    if absent:
        raise InputFileError(getattr(dataset.cfg, "path", "dataset"),
                             f"missing tabular column {absent[0]!r} (have: {', '.join(dataset.tabular_names) or 'none'})")
    return np.stack([np.asarray(dataset.column(c), np.float64) for c in names], axis=1), names
