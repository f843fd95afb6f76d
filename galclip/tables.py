"""Result tables for astronomers: CSV and FITS (astropy) keyed by object_id, written atomically.

Shared by every stage that writes per-object results (``finetune``, ``evaluate``,
``search``, ``label``, ``candidates``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import Table

from galclip.errors import InputFileError
from galclip.utils.io import atomic_path


def columns_table(columns: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Table:
    """Per-object columns → an astropy Table; ``meta`` keys become FITS keywords (≤ 8 chars)."""
    table = Table({k: np.asarray(v) for k, v in columns.items()})
    for k, v in (meta or {}).items():
        table.meta[k.upper()[:8]] = v
    return table


def write_table(table: Table, stem: str | Path, formats: Sequence[str] = ("csv", "fits")) -> list[Path]:
    """Write ``stem.csv`` / ``stem.fits`` through temporary files; returns the paths written.

    String columns are kept as text in both formats (FITS gets fixed-width ASCII), so SDSS
    64-bit object ids never turn into lossy floats.
    """
    stem = Path(stem)
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            if fmt == "csv":
                table.write(tmp, format="ascii.csv", overwrite=True)
            elif fmt == "fits":
                t = table.copy(copy_data=True)
                for name in t.colnames:
                    if t[name].dtype.kind == "O":
                        t[name] = t[name].astype(str)
                t.write(tmp, format="fits", overwrite=True)
            else:
                raise ValueError(f"unknown table format {fmt!r} (csv or fits)")
        out.append(path)
    return out


def read_objects(path: str | Path, column: str | None = None) -> tuple[list[str], np.ndarray | None]:
    """Object ids (and optionally one more column) from a CSV or FITS table with ``object_id``.

    Returns ``(ids, values)``; ``values`` is None when ``column`` is None. Rows with an
    empty value are dropped. One-line :class:`InputFileError` on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "table not found")
    fmt = "fits" if path.suffix.lower() in (".fits", ".fit", ".fz") else "ascii.csv"
    try:
        table = Table.read(path, format=fmt)
    except Exception as exc:  # astropy raises many types for malformed tables
        raise InputFileError(path, f"cannot read table ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    names = {n.lower(): n for n in table.colnames}
    if "object_id" not in names:
        raise InputFileError(path, f"no object_id column (columns: {', '.join(table.colnames)})")
    ids = [str(v).strip() for v in table[names["object_id"]]]
    if column is None:
        return [i for i in ids if i], None
    if column.lower() not in names:
        raise InputFileError(path, f"no {column!r} column (columns: {', '.join(table.colnames)})")
    col = table[names[column.lower()]]
    mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), bool)
    vals = np.asarray(col.filled() if hasattr(col, "filled") else col)
    keep = ~mask & np.asarray([bool(i) for i in ids])
    if vals.dtype.kind in "f":
        keep &= np.isfinite(vals)
    return [i for i, k in zip(ids, keep) if k], vals[keep]
