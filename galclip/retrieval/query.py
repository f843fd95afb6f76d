"""Turn a query (object id, image file, spectrum file) into an embedding.

File queries are preprocessed exactly like the dataset the index was built from (noise-unit
image scaling, spectrum resampled onto the dataset's wavelength grid, normalised) and
embedded with the index's own checkpoint, whose hash must match the index manifest. Because
the CLIP space is shared, a spectrum query can search an image index and vice versa.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from galclip.data.preprocess import ImagePrep, SpectrumPrep, prepare_image, prepare_spectrum, resample_spectrum
from galclip.errors import ConfigError, InputFileError
from galclip.retrieval.store import LoadedIndex

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".fits", ".fit", ".fz", ".fits.gz", ".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class Query:
    """An embedded query.

    Attributes:
        name: object id or file name (+ record id for multi-object spectrum files).
        kind: modality of the query embedding (image or spectrum or joint).
        vector: (D,) embedding.
        row: id-map row of the query object when it is in the index (excluded from results).
        image: (B,H,W) pixels for the gallery, or None.
        wave, flux, ivar: the query spectrum for the gallery, or None.
        ra, dec: query position when known.
        z: the query's redshift when its file gives one (e.g. SDSS ``Z``), else NaN.
        coverage: fraction of the model's wavelength grid the query spectrum covers (the
            rest is masked); 1 for images.
    """

    name: str
    kind: str
    vector: np.ndarray
    row: int = -1
    image: np.ndarray | None = None
    wave: np.ndarray | None = None
    flux: np.ndarray | None = None
    ivar: np.ndarray | None = None
    ra: float = float("nan")
    dec: float = float("nan")
    z: float = float("nan")
    coverage: float = 1.0


def query_from_id(loaded: LoadedIndex, object_id: str, kind: str = "") -> Query:
    """Query with the stored embedding of an indexed object (``kind`` "" = the index's kind)."""
    kind = kind or loaded.manifest.embedding_kind
    store = loaded.store
    row = int(store.rows_of([object_id])[0])
    vec = store.embeddings(kind, [row])[0]
    if not np.isfinite(vec).all():
        have = [k for k in store.kinds if np.isfinite(store.embeddings(k, [row])[0]).all()]
        raise InputFileError(store.path, f"object {object_id!r} has no {kind} embedding (has: {', '.join(have) or 'none'})")
    return Query(name=str(object_id), kind=kind, vector=vec, row=row, ra=float(store.ra[row]), dec=float(store.dec[row]))


def load_checked_model(loaded: LoadedIndex, checkpoint: str = "") -> Any:
    """The index's model; refuses a checkpoint whose hash differs from the manifest's."""
    from galclip.encode import load_checkpoint

    ckpt_path = checkpoint or loaded.manifest.checkpoint
    if not ckpt_path:
        raise ConfigError("file queries need the model: give checkpoint=... (the index manifest names none)")
    return load_checkpoint(ckpt_path, expect_sha256=loaded.manifest.checkpoint_sha256 or "",
                           recorded_by=f"index {loaded.root}").model


def read_image_file(path: str | Path, bands: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixels (B,H,W) float32, ivar and pixel scale (NaN if unknown) from a FITS cutout or
    JPEG/PNG, in the dataset's band order.

    Uses the data team's readers (:func:`galclip.data.readers.images.read_image`). FITS
    bands are selected by name; colour images (R,G,B = i,r,g) are reordered to ``bands``
    when the names match.
    """
    from galclip.data.readers.images import JPEG_SUFFIXES, read_image

    is_colour = Path(path).suffix.lower() in JPEG_SUFFIXES
    rec = read_image(path, None if is_colour or not bands else list(bands))
    img, ivar = np.asarray(rec.image, np.float32), np.asarray(rec.ivar, np.float32)
    if bands and is_colour and sorted(rec.bands) == sorted(bands) and list(rec.bands) != list(bands):
        order = [list(rec.bands).index(b) for b in bands]
        img, ivar = img[order], ivar[order]
    return img, ivar, float(rec.pixel_scale)


@torch.no_grad()
def query_from_image_file(model: Any, path: str | Path, prep: ImagePrep, stored: Mapping[str, Any],
                          kind: str = "image", centre: Sequence[float] | None = None) -> Query:
    """Embed an image file with the image tower, preprocessed like the dataset.

    ``kind``: ``image`` (the CLIP projection) or ``image_features`` (the morphology
    representation, for an index built with ``kind=image_features``; re-centred on the
    indexed survey's ``centre`` like the stored vectors).

    The cutout is first brought to the dataset's stored form the way ingest does it
    (``stored``: ``bands``, ``stored_image_size``, ``image_crop``, ``image_resize``,
    ``pixel_scale`` from the index), then the dataset preprocessing ``prep`` runs.
    """
    from galclip.data.preprocess import stored_cutout

    path = Path(path)
    img, ivar, scale = read_image_file(path, stored.get("bands"))
    n_bands = int(model.cfg.n_bands)
    if img.shape[0] != n_bands:
        raise InputFileError(path, f"image has {img.shape[0]} bands, the model expects {n_bands}")
    size = int(stored.get("stored_image_size", 0))
    if not np.isfinite(scale):
        scale = float(stored.get("pixel_scale", float("nan")))
    if size and img.shape[-2:] != (size, size):  # a file already at the stored size is used as is
        try:
            img, ivar, scale = stored_cutout(img, ivar, size, str(stored.get("image_crop", "")),
                                             str(stored.get("image_resize", "area")), scale)
        except ValueError as exc:
            raise InputFileError(path, str(exc)) from None
    x, _ = prepare_image(img, ivar, prep, scale)
    embed = model.image_representation if kind == "image_features" else model.encode_image
    vec = embed(torch.from_numpy(x)[None]).float().numpy()[0]
    if kind == "image_features" and centre is not None:
        from galclip.encode import recentre

        vec = recentre(vec[None], np.asarray(centre))[0]
    return Query(name=path.name, kind=kind, vector=vec, image=img)


@torch.no_grad()
def queries_from_spectrum_file(model: Any, path: str | Path, grid: np.ndarray, prep: SpectrumPrep,
                               min_overlap: float = 0.3) -> list[Query]:
    """Embed every object of an SDSS/DESI/BOSS spectrum file with the spectrum tower.

    Each spectrum is resampled (flux-conserving) onto the dataset's observed wavelength
    grid ``grid`` and then prepared like dataset spectra (same de-redshifting, binning and
    normalisation), so the tower sees what it saw in training. Grid pixels outside the
    spectrum's wavelength range are masked (ivar 0) and said so; an object covering less
    than ``min_overlap`` of the grid (in log wavelength) is skipped with a warning.
    """
    from galclip.data.readers.spectra import read_spectrum_file

    path = Path(path)
    records, notes = read_spectrum_file(path)
    for note in notes:
        log.warning("%s", note)
    out = []
    for rec in records:
        cover = grid_coverage(rec.wave, grid)
        if cover < min_overlap:
            log.warning("%s: object %s covers %.0f%% of the model's %.0f-%.0f Å grid (< %.0f%%); skipped",
                        path, rec.object_id, 100 * cover, grid[0], grid[-1], 100 * min_overlap)
            continue
        if cover < 0.999:
            log.info("%s: object %s covers %.0f%% of the model's %.0f-%.0f Å grid; masked outside %.0f-%.0f Å",
                     path, rec.object_id, 100 * cover, grid[0], grid[-1], max(rec.wave.min(), grid[0]),
                     min(rec.wave.max(), grid[-1]))
        flux, ivar = resample_spectrum(rec.wave, rec.flux, rec.ivar, grid)
        if np.count_nonzero(ivar > 0) < 8:
            log.warning("%s: object %s has no valid pixel on the dataset wavelength grid; skipped", path, rec.object_id)
            continue
        f, iv, scale = prepare_spectrum(grid, flux, ivar, float(rec.z), prep)
        n = int(model.cfg.spectrum_length)
        if f.shape[0] != n:
            raise InputFileError(path, f"prepared spectrum has {f.shape[0]} pixels, the model expects {n} "
                                       "(use the index's spectrum preprocessing)")
        vec = model.encode_spectrum(torch.from_numpy(f)[None], torch.from_numpy(iv)[None],
                                    torch.tensor([scale])).float().numpy()[0]
        name = f"{path.name}:{rec.object_id}" if len(records) > 1 else path.name
        out.append(Query(name=name, kind="spectrum", vector=vec, wave=rec.wave, flux=rec.flux, ivar=rec.ivar,
                         ra=rec.ra, dec=rec.dec, z=float(rec.z), coverage=cover))
    if not out:
        raise InputFileError(path, f"no spectrum in this file covers {min_overlap:.0%} of the model's "
                                   f"{grid[0]:.0f}-{grid[-1]:.0f} Å wavelength grid")
    return out


def grid_coverage(wave: np.ndarray, grid: np.ndarray) -> float:
    """Fraction of ``grid``'s log-wavelength span inside ``[min(wave), max(wave)]``."""
    w = np.asarray(wave, np.float64)
    w = w[np.isfinite(w) & (w > 0)]
    if w.size < 2:
        return 0.0
    lo, hi = np.log(max(w.min(), grid[0])), np.log(min(w.max(), grid[-1]))
    return float(max(0.0, hi - lo) / (np.log(grid[-1]) - np.log(grid[0])))
