"""Config parsing/overrides/unknown keys and atomic writes (a crash keeps the old file)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from galclip.config import load_config
from galclip.data.ingest import IngestConfig
from galclip.errors import ConfigError, InputFileError
from galclip.utils.io import atomic_path, atomic_write_json, atomic_write_text


@dataclasses.dataclass
class _Inner:
    lr: float = 1e-3
    layers: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


@dataclasses.dataclass
class _Cfg:
    name: str = "x"
    n: int = 3
    flag: bool = False
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    maybe: _Inner | None = None


def test_yaml_and_dotted_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run1\nn: 5\ninner:\n  lr: 0.01\n")
    cfg = load_config(_Cfg, p, ["n=7", "inner.layers=[3,4,5]", "flag=true", "maybe.lr=2"])
    assert cfg.name == "run1" and cfg.n == 7 and cfg.flag is True
    assert cfg.inner.lr == 0.01 and cfg.inner.layers == [3, 4, 5]
    assert isinstance(cfg.maybe, _Inner) and cfg.maybe.lr == 2.0
    # YAML 1.1 reads exponents without a dot ("5e-4") as strings; numbers are still numbers
    p.write_text("inner:\n  lr: 5e-4\n")
    assert load_config(_Cfg, p, []).inner.lr == 5e-4
    assert load_config(_Cfg, None, ["inner.lr=2E-3"]).inner.lr == 2e-3
    with pytest.raises(ConfigError, match="inner.lr: expected a number"):
        load_config(_Cfg, None, ["inner.lr=fast"])


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key inner.lrr"):
        load_config(_Cfg, None, ["inner.lrr=1"])
    with pytest.raises(ConfigError, match="unknown config key bogus"):
        load_config(_Cfg, None, ["bogus=1"])
    with pytest.raises(ConfigError, match="n: expected an integer"):
        load_config(_Cfg, None, ["n=abc"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(_Cfg, None, ["n=.nan"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config(_Cfg, None, ["n"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("n: [1,\n")
    with pytest.raises(InputFileError, match="invalid YAML"):
        load_config(_Cfg, bad)
    with pytest.raises(InputFileError, match="config file not found"):
        load_config(_Cfg, tmp_path / "none.yaml")


@pytest.mark.parametrize("name", ["ingest.yaml", "ingest_gz1.yaml", "ingest_spectra.yaml", "ingest_sdss_jpeg.yaml",
                                  "ingest_legacy_survey.yaml", "ingest_fits.yaml", "ingest_survey_images.yaml"])
def test_shipped_ingest_configs_parse(name):
    from tests.conftest import ROOT

    cfg = load_config(IngestConfig, ROOT / "configs" / name, ["out=/tmp/x"])
    assert cfg.out == "/tmp/x" and cfg.n_wave == 3840
    if name == "ingest_gz1.yaml":
        assert cfg.labels is not None and cfg.labels.columns == {"merger": "is_merger", "gz1_class": "gz1_class"}


def test_atomic_write_roundtrip_and_failure_keeps_old(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # temp file cleaned up


def test_killed_writer_leaves_old_file(tmp_path):
    """A process killed (SIGKILL) mid-write leaves the previous complete file."""
    target = tmp_path / "data.txt"
    atomic_write_text(target, "old complete\n")
    code = textwrap.dedent(f"""
        import os, signal
        from galclip.utils.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "w") as fh:
                fh.write("new partial")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=str(__import__("tests.conftest").conftest.ROOT))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert res.returncode != 0
    assert target.read_text() == "old complete\n"
