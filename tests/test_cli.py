"""The CLI only parses configs and overrides, and reports errors in one line."""
from __future__ import annotations

import pytest

from galclip.cli import COMMANDS, main


def test_help_lists_every_stage(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("simulate", "ingest", "pretrain", "finetune", "index", "search", "label", "evaluate", "report"):
        assert name in out and name in COMMANDS


def test_overrides_before_and_after_options(capsys) -> None:
    assert main(["simulate", "n=5", "--out", "/tmp/somewhere", "seed=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "n: 5" in out and "seed: 3" in out and "out: /tmp/somewhere" in out


def test_bad_override_is_one_line_error(capsys) -> None:
    assert main(["simulate", "no_such_key=1", "--print-config"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no_such_key" in err and "\n" not in err


def test_missing_config_file_names_it(capsys, tmp_path) -> None:
    assert main(["pretrain", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err
