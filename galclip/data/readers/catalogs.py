"""Read label/measurement catalogues (CSV or FITS tables) with id/RA/Dec column detection."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from galclip.data.readers.common import _short
from galclip.errors import InputFileError

ID_CANDIDATES = ("object_id", "objid", "id", "targetid", "specobjid", "bestobjid", "iauname", "name", "galaxy_id")
RA_CANDIDATES = ("ra", "ra_deg", "raj2000", "ra_j2000", "target_ra", "plug_ra", "alpha_j2000", "ra_1")
DEC_CANDIDATES = ("dec", "dec_deg", "dej2000", "decj2000", "dec_j2000", "target_dec", "plug_dec", "delta_j2000", "dec_1")


@dataclasses.dataclass
class Catalog:
    """A catalogue table and the resolved names of its key columns.

    Attributes:
        table: the ``astropy.table.Table``.
        id_column, ra_column, dec_column: resolved column names (``None`` if absent).
        path: the file.
    """

    table: "object"
    id_column: str | None
    ra_column: str | None
    dec_column: str | None
    path: str

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> np.ndarray:
        """Object ids as stripped strings (integer ids keep all digits)."""
        if self.id_column is None:
            raise InputFileError(self.path, "catalogue has no id column (set id_column)")
        return np.asarray([_id_str(v) for v in self.table[self.id_column]], dtype=object)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees as float64 (masked/unparseable → NaN)."""
        if self.ra_column is None or self.dec_column is None:
            raise InputFileError(self.path, "catalogue has no ra/dec columns (set ra_column, dec_column)")
        return _float_col(self, self.ra_column), _float_col(self, self.dec_column)

    def column(self, name: str) -> np.ndarray:
        if name not in self.table.colnames:
            raise InputFileError(self.path, f"missing column {name} (has {', '.join(self.table.colnames)})")
        return np.asarray(self.table[name])

    def numeric_column(self, name: str) -> np.ndarray:
        """A column as float64 (masked → NaN); a text column is an error."""
        return _float_col(self, name)


def _id_str(v: object) -> str:
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if np.ma.is_masked(v):
        return ""
    return str(v).strip()


def _float_col(cat: Catalog, name: str) -> np.ndarray:
    col = cat.table[name]
    try:
        arr = np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)
    except (TypeError, ValueError):
        raise InputFileError(cat.path, f"column {name} is not numeric") from None
    return np.asarray(arr, dtype=np.float64)


def _find(colnames: Sequence[str], configured: str | None, candidates: Sequence[str], what: str, path: Path,
          required: bool) -> str | None:
    lower = {c.lower(): c for c in colnames}
    if configured:
        if configured in colnames:
            return configured
        if configured.lower() in lower:
            return lower[configured.lower()]
        raise InputFileError(path, f"missing {what} column {configured!r} (has {', '.join(colnames)})")
    for c in candidates:
        if c in lower:
            return lower[c]
    if required:
        raise InputFileError(path, f"no {what} column found (tried {', '.join(candidates)}); set it in the config")
    return None


def read_catalog(path: str | Path, id_column: str | None = None, ra_column: str | None = None,
                 dec_column: str | None = None, require: Sequence[str] = ()) -> Catalog:
    """Read a CSV/ECSV/FITS table and detect its id, RA and Dec columns.

    Args:
        path: ``.csv``/``.ecsv``/``.txt`` (comma separated) or ``.fits`` table.
        id_column, ra_column, dec_column: explicit names (else detected, case-insensitive).
        require: which of ``"id"``, ``"radec"`` must be present (error otherwise).
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if suffix.startswith(".fit"):
                tab = Table.read(path, format="fits")
            elif suffix.startswith(".ecsv"):
                tab = Table.read(path, format="ascii.ecsv")
            else:
                tab = Table.read(path, format="ascii.csv")
    except Exception as exc:
        raise InputFileError(path, f"unreadable table ({_short(exc)})") from None
    if len(tab.colnames) == 0:
        raise InputFileError(path, "table has no columns")
    # vector columns (e.g. ugriz fluxes as one (N, 5) column) become NAME_0 .. NAME_4
    for name in list(tab.colnames):
        col = tab[name]
        if getattr(col, "ndim", 1) > 1:
            flat = np.asarray(col).reshape(len(tab), -1)
            pos = tab.colnames.index(name)
            tab.remove_column(name)
            for k in range(flat.shape[1]):
                tab.add_column(flat[:, k], name=f"{name}_{k}", index=pos + k)
    idc = _find(tab.colnames, id_column, ID_CANDIDATES, "id", path, "id" in require)
    rac = _find(tab.colnames, ra_column, RA_CANDIDATES, "ra", path, "radec" in require)
    decc = _find(tab.colnames, dec_column, DEC_CANDIDATES, "dec", path, "radec" in require)
    return Catalog(table=tab, id_column=idc, ra_column=rac, dec_column=decc, path=str(path))
