"""Helpers shared by the readers: open FITS files so any failure becomes one clear line."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from galclip.errors import InputFileError


@contextlib.contextmanager
def open_fits(path: str | Path) -> Iterator[Any]:
    """Open a FITS file read-only; truncated or non-FITS files raise :class:`InputFileError`.

    Data are read eagerly (``memmap=False``, ``lazy_load_hdus=False``) so that a truncated
    file fails here, naming the file, rather than later inside numpy code.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False, ignore_missing_simple=False)
    except InputFileError:
        raise
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError/... on garbage
        raise InputFileError(path, f"not a readable FITS file ({_short(exc)})") from None
    try:
        yield hdul
    except fits.VerifyError as exc:  # a corrupt header card, found when the reader touches it
        raise InputFileError(path, f"malformed FITS header ({_short(exc)})") from None
    finally:
        with contextlib.suppress(Exception):
            hdul.close()


def hdu_data(path: str | Path, hdul: Any, key: int | str, what: str) -> Any:
    """Data of one HDU, or a one-line error saying which HDU is missing/unreadable."""
    try:
        hdu = hdul[key]
    except (KeyError, IndexError):
        raise InputFileError(path, f"no HDU {key!r} ({what})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = hdu.data
    except Exception as exc:
        raise InputFileError(path, f"HDU {key!r} ({what}) unreadable, file truncated? ({_short(exc)})") from None
    if data is None:
        raise InputFileError(path, f"HDU {key!r} ({what}) is empty")
    return data


def table_column(path: str | Path, table: Any, names: tuple[str, ...], what: str, required: bool = True) -> np.ndarray | None:
    """First present column among ``names`` (case-insensitive) of a FITS table."""
    try:
        cols = {c.lower(): c for c in table.columns.names}
    except Exception:
        raise InputFileError(path, f"{what}: not a table") from None
    for n in names:
        if n.lower() in cols:
            try:
                return np.asarray(table[cols[n.lower()]])
            except Exception as exc:
                raise InputFileError(path, f"column {n} unreadable ({_short(exc)})") from None
    if required:
        raise InputFileError(path, f"{what}: missing column {names[0]}")
    return None


def clean_header(header: Any) -> Any:
    """A copy of ``header`` without the cards astropy cannot parse.

    A corrupt keyword (seen in fuzzing: ``FILTER = 1.2.3'``) otherwise raises astropy's
    ``VerifyError`` wherever the header is later read, far from the file it came from;
    dropping just that card keeps the pixels usable and the missing keyword is handled
    like any absent one.
    """
    from astropy.io import fits

    out = fits.Header()
    for card in header.cards:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append((card.keyword, card.value, card.comment), end=True)
        except Exception:
            continue
    return out


def header_float(header: Any, key: str, default: float = float("nan")) -> float:
    """A numeric header keyword, or ``default`` when absent or not a number."""
    try:
        v = header.get(key, default)
        return float(v)
    except (TypeError, ValueError):
        return default


def _short(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{exc.__class__.__name__}: {msg}" if msg else exc.__class__.__name__
