"""Write and describe galclip datasets: HDF5 shards plus a JSON manifest.

A dataset directory holds ``shard-00000.h5``, ``shard-00001.h5``, ... and
``manifest.json``. Each shard is written under a temporary name and renamed when
complete, and the manifest is rewritten atomically after every shard, so a killed ingest
or simulation leaves a valid dataset of the shards finished so far and can be resumed.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from galclip.data import schema as S
from galclip.errors import InputFileError
from galclip.utils.io import atomic_path, atomic_write_json


@dataclasses.dataclass
class ShardInfo:
    """One shard file and how many rows it holds."""

    path: str
    n_rows: int


@dataclasses.dataclass
class Manifest:
    """Dataset description: shards, row counts, bands, wavelength grid and provenance."""

    shards: list[ShardInfo]
    bands: list[str]
    image_size: int
    n_wave: int
    wave_min: float
    wave_max: float
    label_columns: list[str]
    tabular_columns: list[str]
    provenance: dict[str, Any]
    format_version: int = S.FORMAT_VERSION

    @property
    def n_rows(self) -> int:
        return int(sum(s.n_rows for s in self.shards))

    @property
    def has_images(self) -> bool:
        return self.image_size > 0 and len(self.bands) > 0

    @property
    def has_spectra(self) -> bool:
        return self.n_wave > 0

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["n_rows"] = self.n_rows
        return d


def read_manifest(root: str | Path) -> Manifest:
    """Load ``root/manifest.json``; one-line error if it is missing or malformed."""
    path = Path(root) / S.MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw.pop("n_rows", None)
        raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        return Manifest(**raw)
    except FileNotFoundError:
        raise InputFileError(path, "no galclip manifest here (is this a dataset directory?)") from None
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise InputFileError(path, f"malformed manifest ({exc.__class__.__name__}: {exc})") from None


def shard_paths(root: str | Path) -> list[Path]:
    """Absolute shard paths of a dataset, in manifest order."""
    root = Path(root)
    return [root / s.path for s in read_manifest(root).shards]


class ShardWriter:
    """Buffer galaxy rows and write them as fixed-size HDF5 shards.

    Args:
        root: dataset directory (created).
        bands: image band names, ``[]`` for a spectrum-only dataset.
        image_size: H = W of cutouts, 0 when there are no images.
        wavelength: common observed-frame grid (Å), ``None`` for image-only data.
        label_columns: numeric per-row columns to keep (labels, physical parameters).
        tabular_columns: catalogue measurement columns (stored under ``tabular/``).
        shard_size: rows per shard; bounds memory during writing and reading.
        provenance: free-form record of where the data came from.
        resume: keep shards already listed in an existing manifest (re-running a killed
            job continues after them instead of duplicating rows).
    """

    def __init__(
        self,
        root: str | Path,
        bands: Sequence[str],
        image_size: int,
        wavelength: np.ndarray | None,
        label_columns: Sequence[str] = (),
        tabular_columns: Sequence[str] = (),
        shard_size: int = 1024,
        provenance: Mapping[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.bands = list(bands)
        self.image_size = int(image_size)
        self.wavelength = None if wavelength is None else np.asarray(wavelength, dtype=np.float64)
        self.label_columns = list(label_columns)
        self.tabular_columns = list(tabular_columns)
        self.shard_size = int(shard_size)
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat())
        self.shards: list[ShardInfo] = []
        self._rows: list[dict[str, Any]] = []
        if resume and (self.root / S.MANIFEST_NAME).exists():
            self.shards = [s for s in read_manifest(self.root).shards if (self.root / s.path).exists()]

    @property
    def rows_written(self) -> int:
        """Rows safely on disk (in finished shards)."""
        return sum(s.n_rows for s in self.shards)

    def add(self, row: Mapping[str, Any]) -> None:
        """Queue one galaxy; a full buffer is flushed to a new shard."""
        self._rows.append(dict(row))
        if len(self._rows) >= self.shard_size:
            self.flush()

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        """Write buffered rows as one shard (atomically) and update the manifest."""
        if not self._rows:
            return
        name = f"shard-{len(self.shards):05d}.h5"
        with atomic_path(self.root / name) as tmp:
            self._write_shard(tmp, self._rows)
        self.shards.append(ShardInfo(path=name, n_rows=len(self._rows)))
        self._rows = []
        self.write_manifest()

    def close(self) -> Manifest:
        """Flush the last partial shard and return the final manifest."""
        self.flush()
        return self.write_manifest()

    def manifest(self) -> Manifest:
        wl = self.wavelength
        return Manifest(
            shards=list(self.shards),
            bands=self.bands,
            image_size=self.image_size,
            n_wave=0 if wl is None else int(wl.size),
            wave_min=float("nan") if wl is None else float(wl[0]),
            wave_max=float("nan") if wl is None else float(wl[-1]),
            label_columns=self.label_columns,
            tabular_columns=self.tabular_columns,
            provenance=self.provenance,
        )

    def write_manifest(self) -> Manifest:
        man = self.manifest()
        atomic_write_json(self.root / S.MANIFEST_NAME, man.to_json())
        return man

    # -- shard layout -------------------------------------------------------------------
    def _write_shard(self, path: Path, rows: list[dict[str, Any]]) -> None:
        n = len(rows)
        nb, sz = len(self.bands), self.image_size
        nl = 0 if self.wavelength is None else self.wavelength.size

        def col(key: str, default: Any, dtype: Any) -> np.ndarray:
            return np.asarray([r.get(key, default) if r.get(key) is not None else default for r in rows], dtype=dtype)

        with h5py.File(path, "w") as h5:
            h5.attrs["format_version"] = S.FORMAT_VERSION
            h5.attrs[S.IMAGE_BAND] = json.dumps(self.bands)
            h5.create_dataset(S.OBJECT_ID, data=np.asarray([str(r[S.OBJECT_ID]) for r in rows], dtype=object),
                              dtype=h5py.string_dtype("utf-8"))
            h5.create_dataset(S.RA, data=col(S.RA, np.nan, np.float64))
            h5.create_dataset(S.DEC, data=col(S.DEC, np.nan, np.float64))
            h5.create_dataset(S.Z, data=col(S.Z, np.nan, np.float32))
            has_img = np.asarray([bool(r.get(S.HAS_IMAGE, r.get(S.IMAGE) is not None)) for r in rows])
            has_spec = np.asarray([bool(r.get(S.HAS_SPECTRUM, r.get(S.SPEC_FLUX) is not None)) for r in rows])
            if nb and sz:
                img = np.zeros((n, nb, sz, sz), np.float32)
                ivar = np.zeros((n, nb, sz, sz), np.float32)
                for i, r in enumerate(rows):
                    if has_img[i]:
                        img[i] = _checked(r, S.IMAGE, (nb, sz, sz))
                        iv = r.get(S.IMAGE_IVAR)
                        ivar[i] = _checked(r, S.IMAGE_IVAR, (nb, sz, sz)) if iv is not None else 1.0
                chunks = (1, nb, sz, sz)
                h5.create_dataset(S.IMAGE, data=img, chunks=chunks)
                h5.create_dataset(S.IMAGE_IVAR, data=ivar, chunks=chunks)
                h5.create_dataset(S.IMAGE_SCALE, data=col(S.IMAGE_SCALE, np.nan, np.float32))
                psf = np.full((n, nb), np.nan, np.float32)
                for i, r in enumerate(rows):
                    if r.get(S.IMAGE_PSF) is not None:
                        psf[i] = np.broadcast_to(np.asarray(r[S.IMAGE_PSF], np.float32), (nb,))
                h5.create_dataset(S.IMAGE_PSF, data=psf)
            else:
                has_img[:] = False
            h5.create_dataset(S.HAS_IMAGE, data=has_img)
            if nl:
                flux = np.zeros((n, nl), np.float32)
                sivar = np.zeros((n, nl), np.float32)
                smask = np.ones((n, nl), bool)
                for i, r in enumerate(rows):
                    if has_spec[i]:
                        flux[i] = _checked(r, S.SPEC_FLUX, (nl,))
                        sivar[i] = _checked(r, S.SPEC_IVAR, (nl,))
                        m = r.get(S.SPEC_MASK)
                        smask[i] = np.asarray(m, bool) if m is not None else ~(sivar[i] > 0)
                h5.create_dataset(S.SPEC_LAMBDA, data=self.wavelength)
                h5.create_dataset(S.SPEC_FLUX, data=flux, chunks=(1, nl))
                h5.create_dataset(S.SPEC_IVAR, data=sivar, chunks=(1, nl))
                h5.create_dataset(S.SPEC_MASK, data=smask, chunks=(1, nl))
            else:
                has_spec[:] = False
            h5.create_dataset(S.HAS_SPECTRUM, data=has_spec)
            for name in self.label_columns:
                vals = [r.get(name, np.nan) for r in rows]
                h5.create_dataset(name, data=np.asarray([np.nan if v is None else v for v in vals], dtype=np.float64))
            if self.tabular_columns:
                grp = h5.create_group(S.TABULAR_GROUP)
                for name in self.tabular_columns:
                    vals = [(r.get("tabular") or {}).get(name, np.nan) for r in rows]
                    grp.create_dataset(name, data=np.asarray([np.nan if v is None else v for v in vals], np.float32))


def _checked(row: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(row[key], dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"object {row.get(S.OBJECT_ID)}: {key} has shape {arr.shape}, expected {shape}")
    return arr
