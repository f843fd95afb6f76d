"""Classical non-parametric morphology (Gini, M20, CAS, ...) measured with statmorph.

These statistics are the standard merger baseline (Lotz et al. 2004/2008) and a cheap,
well-understood set of tabular features the fine-tuning head can fuse with learned
embeddings. Measurement is done by :mod:`statmorph` on the central source selected from a
:mod:`photutils` segmentation map; nothing here re-implements the statistics.

Speed: statmorph evaluates *every* quantity (including a Sérsic fit, the slowest part) in
its constructor. :class:`_SelectedMorphology` is a thin subclass that only evaluates the
lazy properties we store, so the Sérsic fit runs only when ``sersic_n`` is requested.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import warnings
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Columns written by :func:`morphology_table` (and ingest's ``morph_*`` tabular columns).
MORPH_COLUMNS: tuple[str, ...] = (
    "gini", "m20", "asymmetry", "concentration", "smoothness",
    "gini_m20_merger", "gini_m20_bulge", "shape_asymmetry", "outer_asymmetry",
    "rpetro_circ", "ellipticity_asymmetry", "sn_per_pixel", "flag",
)
#: Extra MID statistics (Freeman et al. 2013); ~2× the cost of everything else together.
MID_COLUMNS: tuple[str, ...] = ("multimode", "intensity", "deviation")
#: Extra column when Sérsic fitting is enabled (a 2-D model fit per galaxy).
SERSIC_COLUMNS: tuple[str, ...] = ("sersic_n",)


def morph_columns(mid: bool = False, sersic: bool = False) -> tuple[str, ...]:
    """Column names measured for the given options, in table order."""
    return MORPH_COLUMNS + (MID_COLUMNS if mid else ()) + (SERSIC_COLUMNS if sersic else ())


def _statmorph_class():
    import statmorph

    class _SelectedMorphology(statmorph.SourceMorphology):
        """statmorph, evaluating only the requested lazy quantities (skips the Sérsic fit)."""

        _wanted: tuple[str, ...] = ()

        def _calculate_morphology(self) -> None:  # noqa: D401 - statmorph hook
            for q in self._wanted:
                _ = self[q]

    return _SelectedMorphology


def central_segmap(image: np.ndarray, mask: np.ndarray | None = None, nsigma: float = 1.5,
                   npixels: int = 5) -> tuple[np.ndarray, int] | None:
    """Segmentation map and the label of the source nearest the cutout centre, or ``None``.

    Detection uses photutils on a lightly smoothed image (threshold ``nsigma`` above the
    sigma-clipped sky); the segment covering — or closest to — the centre is kept, the
    other sources are returned as a mask by :func:`measure_morphology`.
    """
    from astropy.convolution import convolve
    from photutils.segmentation import detect_sources, detect_threshold, make_2dgaussian_kernel

    kernel = make_2dgaussian_kernel(1.5, size=5)
    smooth = convolve(image, kernel, mask=mask, nan_treatment="fill", fill_value=0.0)
    thr = detect_threshold(smooth, n_sigma=nsigma, mask=mask)
    seg = detect_sources(smooth, thr, n_pixels=npixels, mask=mask)
    if seg is None:
        return None
    data = seg.data
    h, w = data.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    label = data[int(round(cy)), int(round(cx))]
    if label == 0:
        yy, xx = np.nonzero(data)
        k = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        label = data[yy[k], xx[k]]
    return data, int(label)


def measure_morphology(image_hw: np.ndarray, ivar_hw: np.ndarray | None = None,
                       sersic: bool = False, mid: bool = False, mask_neighbours: bool = True) -> dict[str, float]:
    """Morphology of the central galaxy of one single-band cutout; NaN on any failure.

    Args:
        image_hw: (H, W) image (any linear flux unit; sky need not be subtracted).
        ivar_hw: inverse variance; ``None`` or a constant map (JPEG) means "unknown", and
            the noise is then estimated from the sky.
        sersic: also fit a Sérsic profile (``sersic_n``).
        mid: also measure the MID statistics (multimode, intensity, deviation).
        mask_neighbours: mask other detected sources (a detached companion then does not
            count towards asymmetry; touching ones share the central segment anyway).

    Returns:
        ``{name: value}`` for :func:`morph_columns` (``mid``, ``sersic``). ``flag`` is statmorph's
        quality flag (0 good, 1 suspect, 2 bad, 4 catastrophic); never raises.
    """
    names = morph_columns(mid, sersic)
    out = {k: float("nan") for k in names}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return _measure(image_hw, ivar_hw, sersic, out, mask_neighbours)
    except Exception as exc:  # statmorph/photutils raise many kinds on degenerate input
        log.debug("morphology failed: %s", exc)
        return {k: float("nan") for k in out}


def _measure(image_hw: np.ndarray, ivar_hw: np.ndarray | None, sersic: bool, out: dict[str, float],
             mask_neighbours: bool = True) -> dict[str, float]:
    from astropy.stats import sigma_clipped_stats

    img = np.asarray(image_hw, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 8:
        return out
    bad = ~np.isfinite(img)
    iv = None if ivar_hw is None else np.asarray(ivar_hw, dtype=np.float64)
    if iv is not None:
        if iv.shape != img.shape:
            return out
        bad |= ~np.isfinite(iv) | (iv <= 0)
        good_iv = iv[~bad]
        if good_iv.size == 0 or np.ptp(good_iv) == 0:
            iv = None  # constant ivar (e.g. JPEG ones): carries no noise level
    if bad.all():
        return out
    img = np.where(bad, 0.0, img)
    _, sky, sky_sigma = sigma_clipped_stats(img, mask=bad, sigma=3.0, maxiters=5)
    if not np.isfinite(sky_sigma) or sky_sigma <= 0:
        return out
    img = np.where(bad, 0.0, img - sky)
    found = central_segmap(img, mask=bad)
    if found is None:
        return out
    segdata, label = found
    mask = bad | ((segdata != label) & (segdata != 0)) if mask_neighbours else bad
    seg = (segdata == label).astype(np.int32)
    if iv is not None:
        weight = np.where(bad, sky_sigma, 1.0 / np.sqrt(np.where(bad, 1.0, iv)))
    else:
        weight = np.full(img.shape, float(sky_sigma))
    cls = _statmorph_class()
    cls._wanted = tuple(n for n in out if n != "flag") + ("sky_mean", "sky_sigma")
    m = cls(img, seg, 1, mask=mask, weightmap=weight, skybox_size=max(4, min(img.shape) // 8),
            min_cutout_size=min(48, min(img.shape)), sersic_maxiter=300 if sersic else None)
    for k in out:
        v = getattr(m, k, np.nan)
        try:
            v = float(v)
        except (TypeError, ValueError):
            v = float("nan")
        out[k] = v if np.isfinite(v) and v != -99.0 else float("nan")
    out["flag"] = float(getattr(m, "flag", np.nan))
    return out


def _one(args: tuple[np.ndarray, np.ndarray | None, bool, bool]) -> list[float]:
    img, iv, sersic, mid = args
    d = measure_morphology(img, iv, sersic=sersic, mid=mid)
    return [d[k] for k in d]


def morphology_table(images: np.ndarray | Sequence[np.ndarray], ivars: np.ndarray | Sequence[np.ndarray] | None = None,
                     n_jobs: int = 1, sersic: bool = False, mid: bool = False,
                     progress: bool = True) -> np.ndarray:
    """Measure :func:`measure_morphology` on N single-band cutouts → (N, K) float array.

    Columns are :func:`morph_columns` ``(mid, sersic)``. Uses a
    process pool for ``n_jobs > 1`` (statmorph is pure Python/NumPy, so threads would not
    help) and a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    n = len(images)
    k = len(morph_columns(mid, sersic))
    if n == 0:
        return np.zeros((0, k), np.float64)
    tasks = ((images[i], None if ivars is None else ivars[i], sersic, mid) for i in range(n))
    bar = tqdm(total=n, desc="morphology", unit="gal", disable=not progress)
    rows: list[list[float]] = []
    if n_jobs and n_jobs > 1 and n > 1:
        # fork is cheap on Linux; elsewhere (macOS/Windows) spawn is the only safe choice
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(n_jobs) as pool:
            for r in pool.imap(_one, tasks, chunksize=8):
                rows.append(r)
                bar.update(1)
    else:
        for t in tasks:
            rows.append(_one(t))
            bar.update(1)
    bar.close()
    return np.asarray(rows, dtype=np.float64).reshape(n, k)
