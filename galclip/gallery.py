"""Galleries for astronomers: PNG contact sheets and one self-contained HTML report.

Each object is shown as an RGB composite of three bands with the Lupton et al. (2004)
arcsinh stretch (``astropy.visualization.make_lupton_rgb``) beside its spectrum when it
has one. The HTML report embeds every thumbnail and spectrum plot as base64 PNG, so it is
a single file that can be mailed or attached to a proposal. The lead reuses
:func:`html_report` for the quickstart report.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import make_lupton_rgb  # noqa: E402

from galclip.utils.io import atomic_path, atomic_write_text  # noqa: E402


@dataclasses.dataclass
class GalleryItem:
    """One object to show.

    Attributes:
        object_id: survey identifier.
        ra, dec: degrees (NaN when unknown).
        score: similarity / candidate score (NaN for the query itself).
        rank: 0 for the query, 1.. for results.
        image: (B,H,W) pixels in any units (noise-scaled here), or None.
        wave, flux, ivar: spectrum (Å, flux, inverse variance; ivar 0 = masked), or None.
        caption: extra text (e.g. a label or a predicted class).
        extra: further table columns for the HTML report.
    """

    object_id: str
    ra: float = float("nan")
    dec: float = float("nan")
    score: float = float("nan")
    rank: int = 0
    image: np.ndarray | None = None
    wave: np.ndarray | None = None
    flux: np.ndarray | None = None
    ivar: np.ndarray | None = None
    caption: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def rgb_composite(image: np.ndarray, bands: Sequence[int] | None = None, q: float = 8.0,
                  stretch: float = 0.5, percentile: float = 99.5) -> np.ndarray:
    """(B,H,W) image → (H,W,3) uint8 RGB with the Lupton arcsinh stretch.

    Each band's sky level (median) is subtracted, then *all* bands are divided by one
    common scale — the ``percentile`` brightest pixel of the band mean — so colours keep
    the flux ratios between bands (per-band scaling would tint every galaxy) while faint
    tidal features stay visible. Default bands: the classic g,r,i → B,G,R choice (for
    ``ugriz`` and ``griz`` cutouts), the last three bands otherwise; one or two band images
    are repeated. Non-finite pixels are shown as sky.
    """
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = img[None]
    img = np.where(np.isfinite(img), img, np.nan)
    with warnings.catch_warnings():  # an all-blank band has no sky: treated as 0
        warnings.simplefilter("ignore", RuntimeWarning)
        sky = np.nanmedian(img.reshape(img.shape[0], -1), axis=1)
    img = np.nan_to_num(img - np.nan_to_num(sky)[:, None, None])
    nb = img.shape[0]
    if bands is None:
        bands = {1: (0, 0, 0), 2: (1, 1, 0), 3: (2, 1, 0), 4: (2, 1, 0), 5: (3, 2, 1)}.get(nb, (nb - 1, nb - 2, nb - 3))
    r, g, b = (img[int(i)] for i in bands)
    top = float(np.percentile((r + g + b) / 3.0, percentile))
    norm = top if np.isfinite(top) and top > 0 else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):  # blank pixels: 0/0 inside astropy → black
        return make_lupton_rgb(r / norm, g / norm, b / norm, minimum=0.0, stretch=stretch, Q=q)


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buf.getvalue()


def image_png(image: np.ndarray, size_in: float = 1.6) -> bytes:
    """Thumbnail PNG of one cutout."""
    fig = plt.figure(figsize=(size_in, size_in), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(rgb_composite(image), origin="lower", interpolation="nearest")
    ax.set_axis_off()
    return _png(fig)


def _plot_spectrum(ax: plt.Axes, wave: np.ndarray | None, flux: np.ndarray, ivar: np.ndarray | None) -> None:
    flux = np.asarray(flux, np.float64)
    good = np.isfinite(flux) & ((np.asarray(ivar) > 0) if ivar is not None else True)
    x = np.asarray(wave, np.float64) if wave is not None and len(wave) == len(flux) else np.arange(len(flux))
    y = np.where(good, flux, np.nan)
    ax.plot(x, y, lw=0.5, color="k")
    if good.any():
        lo, hi = np.nanpercentile(y, [0.5, 99.5])
        pad = 0.1 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("wavelength [Å]" if wave is not None and len(wave) == len(flux) else "pixel", fontsize=6)
    ax.tick_params(labelsize=5)


def spectrum_png(wave: np.ndarray | None, flux: np.ndarray, ivar: np.ndarray | None = None,
                 size_in: tuple[float, float] = (3.2, 1.6)) -> bytes:
    """Small PNG plot of one spectrum (masked pixels left out)."""
    fig = plt.figure(figsize=size_in, dpi=80)
    ax = fig.add_axes((0.1, 0.22, 0.87, 0.74))
    _plot_spectrum(ax, wave, flux, ivar)
    return _png(fig)


def _title(it: GalleryItem) -> str:
    head = "query" if it.rank == 0 else f"#{it.rank}"
    score = "" if not np.isfinite(it.score) else f"  s={it.score:.3f}"
    cap = f"\n{it.caption}" if it.caption else ""
    return f"{head} {it.object_id}{score}{cap}"


def gallery_png(items: Sequence[GalleryItem], path: str | Path, title: str = "", ncols: int = 4) -> Path:
    """Contact sheet: per object an image panel beside its spectrum (query framed in red)."""
    n = max(1, len(items))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = plt.figure(figsize=(ncols * 4.6, nrows * 1.9 + (0.4 if title else 0)), dpi=90)
    if title:
        fig.suptitle(title, fontsize=9)
    top = 1 - (0.4 / (nrows * 1.9 + 0.4) if title else 0)
    h = top / nrows
    for k, it in enumerate(items):
        r, c = divmod(k, ncols)
        x0, y0 = c / ncols, top - (r + 1) * h
        w = 1 / ncols
        ax_i = fig.add_axes((x0 + 0.005 * w, y0 + 0.06 * h, 0.33 * w, 0.76 * h))
        if it.image is not None:
            ax_i.imshow(rgb_composite(it.image), origin="lower", interpolation="nearest")
        else:
            ax_i.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7)
        ax_i.set_xticks([])
        ax_i.set_yticks([])
        if it.rank == 0:
            for s in ax_i.spines.values():
                s.set_edgecolor("red")
                s.set_linewidth(2)
        ax_i.set_title(_title(it), fontsize=6, loc="left")
        ax_s = fig.add_axes((x0 + 0.42 * w, y0 + 0.2 * h, 0.55 * w, 0.62 * h))
        if it.flux is not None:
            _plot_spectrum(ax_s, it.wave, it.flux, it.ivar)
        else:
            ax_s.text(0.5, 0.5, "no spectrum", ha="center", va="center", fontsize=7)
            ax_s.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    plt.close(fig)
    return Path(path)


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle;font-size:13px}
th{background:#f3f3f3}tr.query{background:#fff2f2}.mono{font-family:monospace}
.note{color:#555;font-size:13px;max-width:60em}"""


Table = tuple[Sequence[str], Sequence[Sequence[Any]]]


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """An escaped HTML ``<table>`` (floats to ``digits`` decimals, NaN as blank)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c, digits))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(items: Sequence[GalleryItem], path: str | Path, title: str, intro: str = "",
                images: Mapping[str, str | Path | bytes] | None = None,
                tables: Mapping[str, Table] | None = None) -> Path:
    """One self-contained HTML file: a table of objects with thumbnails, spectra and scores.

    Args:
        items: objects to list (a ``rank`` 0 item is highlighted as the query).
        path: output ``.html``.
        title: page title.
        intro: a paragraph of plain text shown under the title (escaped).
        tables: ``{heading: (header, rows)}`` small tables (metrics) shown before the figures.
        images: extra ``{caption: PNG path or bytes}`` figures embedded before the table
            (e.g. training curves in the quickstart report).
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p class='note'>{html.escape(intro)}</p>")
    for head, (header, rows) in (tables or {}).items():
        parts.append(f"<h2>{html.escape(head)}</h2>{html_table(header, rows)}")
    for cap, img in (images or {}).items():
        data = img if isinstance(img, bytes) else Path(img).read_bytes()
        parts.append(f"<figure><img src='{_b64(data)}' style='max-width:100%'><figcaption>{html.escape(cap)}"
                     "</figcaption></figure>")
    if items:
        extra_cols = list(dict.fromkeys(k for it in items for k in it.extra))
        head = ["rank", "image", "spectrum", "object_id", "ra", "dec", "score", "note", *extra_cols]
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        for it in items:
            img = f"<img src='{_b64(image_png(it.image))}' width='128'>" if it.image is not None else "—"
            spec = (f"<img src='{_b64(spectrum_png(it.wave, it.flux, it.ivar))}' width='256'>"
                    if it.flux is not None else "—")
            cells = ["query" if it.rank == 0 else str(it.rank), img, spec,
                     f"<span class='mono'>{html.escape(it.object_id)}</span>", _fmt(it.ra, 5), _fmt(it.dec, 5),
                     _fmt(it.score, 4), html.escape(it.caption)]
            cells += [html.escape(_fmt(it.extra.get(c, ""), 4)) for c in extra_cols]
            cls = " class='query'" if it.rank == 0 else ""
            parts.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))


def _fmt(v: Any, digits: int) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.{digits}f}"
    return str(v)


def items_from_dataset(dataset_path: str | Path, object_ids: Sequence[str], scores: Sequence[float] | None = None,
                       ranks: Sequence[int] | None = None, captions: Sequence[str] | None = None) -> list[GalleryItem]:
    """Gallery items for dataset objects (raw pixels and observed-frame spectra).

    Objects missing from the dataset are still listed, without pixels, so a gallery never
    silently drops a result.
    """
    from galclip.data.dataset import DataConfig, SurveyDataset

    ds = SurveyDataset(DataConfig(path=str(dataset_path)))
    row_of = {oid: i for i, oid in enumerate(ds.column("object_id"))}
    ra, dec = ds.column("ra"), ds.column("dec")
    out = []
    for k, oid in enumerate(object_ids):
        it = GalleryItem(object_id=str(oid), score=float(scores[k]) if scores is not None else float("nan"),
                         rank=int(ranks[k]) if ranks is not None else k + 1,
                         caption=captions[k] if captions is not None else "")
        i = row_of.get(str(oid))
        if i is not None:
            raw = ds.raw_row(i)
            it.ra, it.dec = float(ra[i]), float(dec[i])
            if bool(raw.get("has_image", False)) and "image_array" in raw:
                it.image = np.asarray(raw["image_array"], np.float32)
            if bool(raw.get("has_spectrum", False)) and "spectrum_flux" in raw:
                it.wave = ds.wave
                it.flux = np.asarray(raw["spectrum_flux"], np.float32)
                it.ivar = np.where(raw["spectrum_mask"], 0, raw["spectrum_ivar"]).astype(np.float32)
        out.append(it)
    return out


def known_labels(survey: str | Path, ids: Sequence[str]) -> list[str]:
    """"merger (post_merger)" / "not a merger (isolated)" for each id where the dataset has
    a ``merger`` label; empty list when it has none (real surveys without labels)."""
    from galclip.data import schema as S
    from galclip.data.dataset import DataConfig, SurveyDataset

    ds = SurveyDataset(DataConfig(path=str(survey)))
    if "merger" not in ds.label_names:
        return []
    row = {oid: i for i, oid in enumerate(ds.column("object_id"))}
    merger = ds.column("merger")
    stage = ds.column("merger_stage") if "merger_stage" in ds.label_names else None
    out = []
    for oid in ids:
        i = row.get(oid)
        if i is None or not np.isfinite(merger[i]):
            out.append("unlabelled")
            continue
        text = "merger" if merger[i] > 0 else "not a merger"
        if stage is not None and np.isfinite(stage[i]) and 0 <= int(stage[i]) < len(S.MERGER_STAGES):
            text += f" ({S.MERGER_STAGES[int(stage[i])]})"
        out.append(text)
    return out
