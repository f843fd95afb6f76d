"""Files that travel between people are parsed safely and checked before use."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from galclip.config import read_yaml
from galclip.data.shards import ShardWriter, read_manifest
from galclip.errors import GalclipError, InputFileError


def test_yaml_never_constructs_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.yaml"
    bad.write_text(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(InputFileError, match="evil.yaml"):
        read_yaml(bad)
    assert not marker.exists()


def test_pickled_checkpoint_is_refused_without_unpickling(tmp_path: Path) -> None:
    from galclip.models.checkpoint import load_model, save_checkpoint
    from galclip.models.config import get_model_config
    from galclip.models.galclip import build_model

    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=128)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(build_model(cfg), cfg, ckpt)

    class Boom:
        def __reduce__(self):  # executing this would create the marker file
            return (Path.touch, (tmp_path / "pwned",))

    (ckpt / "model.safetensors").write_bytes(pickle.dumps({"state": Boom()}))
    with pytest.raises(GalclipError) as err:
        load_model(ckpt)
    assert "\n" not in str(err.value) and "model.safetensors" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_crash_while_writing_a_shard_leaves_previous_dataset_valid(tmp_path: Path, monkeypatch) -> None:
    w = ShardWriter(tmp_path / "ds", ["r"], 16, None, shard_size=4)
    row = lambda i: {"object_id": str(i), "image_array": np.zeros((1, 16, 16)), "image_ivar": np.ones((1, 16, 16))}  # noqa: E731
    for i in range(4):
        w.add(row(i))
    assert read_manifest(tmp_path / "ds").n_rows == 4

    def crash(path, rows):
        Path(path).write_bytes(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(w, "_write_shard", crash)
    with pytest.raises(OSError):
        for i in range(4, 8):
            w.add(row(i))
    files = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert files == ["manifest.json", "shard-00000.h5"], files
    assert read_manifest(tmp_path / "ds").n_rows == 4


def test_embeddings_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    import h5py

    from galclip.embeddings import read_embeddings

    p = tmp_path / "e.h5"
    with h5py.File(p, "w") as h5:
        h5["joint"] = np.zeros((3, 4))
    with pytest.raises(InputFileError, match="e.h5"):
        read_embeddings(p)
