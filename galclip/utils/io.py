"""Atomic file writes: nothing is ever left half-written under its final name.

Long jobs on shared clusters get killed; a reader must only ever see a complete file or
the previous complete file. Everything galclip writes goes through these helpers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    """Flush the directory entry so the rename survives a power cut."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` on success.

    The temporary file is fsynced before the rename and removed if the body raises, so a
    crash leaves either the old file or the new one, never a torn one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else final.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{sfx}.tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(final: str | Path, data: bytes) -> Path:
    """Write bytes atomically and return the final path."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: str | Path, text: str) -> Path:
    """Write text (UTF-8) atomically and return the final path."""
    return atomic_write_bytes(final, text.encode("utf-8"))


def atomic_write_json(final: str | Path, obj: Any) -> Path:
    """Write JSON atomically (sorted keys, indented, NaN-free by ``default=str``)."""
    return atomic_write_text(final, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    """Serialise numpy scalars/arrays and paths that ``json`` does not know."""
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed so large checkpoints do not load into memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
