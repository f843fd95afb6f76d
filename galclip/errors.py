"""Errors that reach users as one clear line naming the file and the reason."""
from __future__ import annotations

from pathlib import Path


class GalclipError(Exception):
    """Base class for errors galclip reports to users instead of a traceback."""


class InputFileError(GalclipError, ValueError):
    """A survey product (image, spectrum, catalogue, config, checkpoint) is unusable.

    The message is always ``"<path>: <reason>"`` on one line so that ingest reports and
    log files can be grepped by file name.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # force one line
        super().__init__(f"{self.path}: {self.reason}")


class ConfigError(GalclipError, ValueError):
    """A configuration value or override is invalid."""
