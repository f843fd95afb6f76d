"""SIGKILL a stage mid-run, run it again, and get exactly what an uninterrupted run gives.

Each test starts the real CLI in a subprocess, waits until it has written durable progress
(a resume checkpoint, a finished shard), kills it with SIGKILL — no chance to clean up —
and re-runs the same command.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def galclip(*args: str) -> list[str]:
    return [sys.executable, "-m", "galclip.cli", *args]


def run_ok(cmd: list[str], timeout: float = 300) -> None:
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}"


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Start ``cmd``; SIGKILL it as soon as ``ready()``. Returns False if it finished first."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                return False
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
        raise AssertionError(f"{' '.join(cmd)} made no progress in {timeout}s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def n_shards(root: Path) -> int:
    return len(list(root.glob("shard-*.h5")))


def read_all(root: Path, key: str) -> np.ndarray:
    parts = []
    for p in sorted(root.glob("shard-*.h5")):
        with h5py.File(p, "r") as h5:
            parts.append(h5[key].asstr()[()] if h5[key].dtype.kind == "O" else h5[key][()])
    return np.concatenate(parts)


def test_pretrain_killed_and_resumed_matches_uninterrupted(tiny_dataset: Path, tmp_path: Path) -> None:
    common = ["--data", str(tiny_dataset), "--model", "tiny", "train.steps=24", "train.batch_size=8",
              "train.checkpoint_every=3", "train.threads=1", "train.num_workers=0", "progress=false",
              "data.image.size=32", "train.val_fraction=0.2"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_ok(galclip("pretrain", "--out", str(ref), *common))
    ckpt = killed / "resume" / "last.ckpt"
    was_killed = kill_when(galclip("pretrain", "--out", str(killed), *common), ckpt.exists)
    assert was_killed, "run finished before a checkpoint appeared; make it longer"
    assert not (killed / "model.safetensors").exists()
    run_ok(galclip("pretrain", "--out", str(killed), *common))
    a, b = load_file(ref / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_simulate_killed_and_rerun_has_no_duplicate_or_missing_rows(tmp_path: Path) -> None:
    args = ["--n", "48", "shard_size=8", "chunk_size=4", "n_jobs=1", "image_size=32", "progress=false",
            "derived=false"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_ok(galclip("simulate", "--out", str(ref), *args))
    assert kill_when(galclip("simulate", "--out", str(killed), *args), lambda: n_shards(killed) >= 2)
    run_ok(galclip("simulate", "--out", str(killed), *args, "resume=true"))
    ids_ref, ids = read_all(ref, "object_id"), read_all(killed, "object_id")
    assert len(ids) == 48 and len(set(ids)) == 48
    assert list(ids) == list(ids_ref)
    np.testing.assert_array_equal(read_all(ref, "image_array"), read_all(killed, "image_array"))


def test_ingest_killed_and_resumed_keeps_every_file_once(tmp_path: Path) -> None:
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(imgs / f"{1000 + i}.png")
    out = tmp_path / "ds"
    args = ["--out", str(out), f"images=[{imgs}/*.png]", "shard_size=6", "image_size=32", "progress=false"]
    assert kill_when(galclip("ingest", *args), lambda: n_shards(out) >= 2)
    run_ok(galclip("ingest", *args, "resume=true"))
    ids = read_all(out, "object_id")
    assert sorted(ids) == sorted(str(1000 + i) for i in range(60))


def test_index_build_killed_leaves_no_torn_index(tmp_path: Path) -> None:
    from galclip.embeddings import write_embedding_arrays

    n, d = 20000, 64
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    emb = tmp_path / "emb.h5"
    write_embedding_arrays(emb, {"object_id": np.asarray([f"o{i}" for i in range(n)], object), "ra": np.zeros(n),
                           "dec": np.zeros(n), "has_image": np.ones(n, bool), "has_spectrum": np.zeros(n, bool),
                           "image": x, "spectrum": np.full_like(x, np.nan), "joint": x},
                           {"checkpoint_sha256": "abc", "model_name": "t", "embed_dim": d, "dataset": "none"})
    out = tmp_path / "index"
    args = ["--out", str(out), f"embeddings={emb}", "kind=image", "factory=HNSW16,Flat", "overwrite=true"]
    kill_when(galclip("index", *args), lambda: out.exists(), timeout=120)
    # whatever the kill left behind, a rerun completes and the final names hold complete files
    run_ok(galclip("index", *args))
    from galclip.retrieval.store import load_index

    loaded = load_index(out, embedding_kind="image")
    assert loaded.index.ntotal == n
    _, rows = loaded.search(x[:5], k=1)
    assert list(rows[:, 0]) == [0, 1, 2, 3, 4]
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_finetune_killed_and_rerun_matches_uninterrupted(tiny_dataset: Path, tmp_path: Path) -> None:
    """Frozen-encoder fine-tuning keeps only finished products (feature cache, head): a rerun
    after SIGKILL reaches the same head weights as an uninterrupted run."""
    from galclip.models.checkpoint import save_checkpoint
    from galclip.models.config import get_model_config
    from galclip.models.galclip import build_model

    import torch

    torch.manual_seed(0)
    mcfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=256)
    save_checkpoint(build_model(mcfg), mcfg, tmp_path / "enc")
    common = ["--data", str(tiny_dataset), "--checkpoint", str(tmp_path / "enc"), "data.image.size=32",
              "head.tabular=none", "test_fraction=0.25", "progress=false"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_ok(galclip("finetune", "--out", str(ref), *common))
    kill_when(galclip("finetune", "--out", str(killed), *common), lambda: (killed / "cache").exists())
    run_ok(galclip("finetune", "--out", str(killed), *common))
    a, b = load_file(ref / "head.safetensors"), load_file(killed / "head.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
