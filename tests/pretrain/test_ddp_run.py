"""Multi-process DDP pretraining through Lightning, end to end (2 CPU ranks, gloo).

``galclip pretrain train.strategy=ddp train.devices=2`` is launched as a user would launch
it: Lightning re-executes the command for rank 1. With augmentation off and no dropout,
training on 2 ranks × B/2 objects with gathered negatives must follow the same weights as
one process on the same global batch B — the property that makes multi-GPU/multi-node
runs trustworthy (and that a wrong gather, a missing gradient path or a per-rank data
split bug would break).

The comparison is on what the models *compute* (the embeddings of every object) and on
the logged losses, not raw weights: parameters with no true gradient (attention key
biases, conv biases before a per-channel GroupNorm) take Adam steps of ±lr driven by
rounding noise, which differs between 1 and 2 processes but cannot change any output.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from galclip.pretrain.train import PretrainConfig, run_pretrain

NO_AUG = {"rot90": False, "flip": False, "shift_px": 0.0, "image_noise": 0.0, "spectrum_noise": 0.0,
          "mask_windows": 0, "tilt": 0.0, "scale_jitter": 0.0, "scale_drop": 0.0}
SETTINGS = {"model": "tiny", "seed": 5, "progress": False, "data.image.size": 32, "train.steps": 5,
            "train.batch_size": 8, "train.checkpoint_every": 0, "train.val_fraction": 0.25, "train.log_every": 1,
            "optim.warmup_steps": 2, "optim.lr": 3e-3, "loss.ssl_image_weight": 0.5,
            **{f"augment.{k}": v for k, v in NO_AUG.items()}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _single(data, out) -> None:
    cfg = PretrainConfig(model="tiny", out=str(out), progress=False, seed=5)
    cfg.data.path = str(data)
    cfg.data.image.size = 32
    cfg.train.steps, cfg.train.batch_size, cfg.train.checkpoint_every = 5, 8, 0
    cfg.train.val_fraction, cfg.train.log_every = 0.25, 1
    cfg.optim.warmup_steps, cfg.optim.lr = 2, 3e-3
    cfg.loss.ssl_image_weight = 0.5
    for k, v in NO_AUG.items():
        setattr(cfg.augment, k, v)
    run_pretrain(cfg)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_rank_ddp_run_matches_single_process(tiny_dataset, tmp_path):
    overrides = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in SETTINGS.items()]
    cmd = [sys.executable, "-m", "galclip.cli", "pretrain", f"data.path={tiny_dataset}", f"out={tmp_path / 'ddp'}",
           "train.strategy=ddp", "train.devices=2", "train.accelerator=cpu", "train.threads=1", *overrides]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                                                                   "MASTER_", "RANK"))}
    env["MASTER_PORT"] = str(_free_port())
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 5 and metrics["global_batch"] == 8
    assert "val/i2s_top1" in metrics

    _single(tiny_dataset, tmp_path / "one")
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5, abs=1e-6)
    ddp, one = _embeddings(tmp_path / "ddp", tiny_dataset), _embeddings(tmp_path / "one", tiny_dataset)
    fresh = _embeddings(tmp_path / "one", tiny_dataset, trained=False)
    for k in ("image", "spectrum"):
        assert float((one[k] - fresh[k]).abs().max()) > 1e-2  # training moved the embeddings
        worst = float((ddp[k] - one[k]).abs().max())
        assert worst < 1e-4, f"2-rank DDP {k} embeddings differ from 1 process by {worst:g}"


def _losses(run) -> list[float]:
    """train/loss per logged step from the run's CSV log."""
    import csv

    rows = list(csv.DictReader(next((run / "logs" / "csv").rglob("metrics.csv")).open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@torch.no_grad()
def _embeddings(run, data, trained: bool = True) -> dict[str, torch.Tensor]:
    from galclip.data.dataset import DataConfig, SurveyDataset, collate
    from galclip.models.checkpoint import data_config_for, load_model
    from galclip.models.galclip import build_model

    model, cfg = load_model(run)
    if not trained:
        torch.manual_seed(0)
        model = build_model(cfg)
    model.eval()
    ds = SurveyDataset(data_config_for(run, DataConfig(path=str(data))))
    b = collate([ds[i] for i in range(len(ds))])
    return {"image": model.encode_image(b["image"]),
            "spectrum": model.encode_spectrum(b["spectrum"], b["spectrum_ivar"], b["spectrum_scale"])}
