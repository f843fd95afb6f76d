"""End-to-end pretraining on the tiny dataset: outputs, exact resume, NaN safety, image-only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from galclip.data.shards import ShardWriter
from galclip.errors import GalclipError, InputFileError
from galclip.models import load_model
from galclip.pretrain.module import PretrainModule
from galclip.pretrain.train import PretrainConfig, run_pretrain


def _cfg(data: Path, out: Path, **train) -> PretrainConfig:
    cfg = PretrainConfig(model="tiny", out=str(out), progress=False, seed=3)
    cfg.data.path = str(data)
    cfg.data.image.size = 32
    cfg.train.steps = 6
    cfg.train.batch_size = 8
    cfg.train.checkpoint_every = 3
    cfg.train.val_fraction = 0.25
    cfg.train.log_every = 1
    cfg.optim.warmup_steps = 2
    cfg.optim.lr = 3e-3
    cfg.loss.ssl_image_weight = 0.5  # exercise every term
    cfg.loss.ssl_spectrum_weight = 0.5
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_run_outputs(tiny_dataset, tmp_path):
    m = run_pretrain(_cfg(tiny_dataset, tmp_path / "run"))
    out = tmp_path / "run"
    for name in ("model.safetensors", "model.json", "config.yaml", "metrics.json", "resume/last.ckpt"):
        assert (out / name).exists(), name
    assert list((out / "logs").rglob("metrics.csv")) and list((out / "logs").rglob("events.out.tfevents*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["objects_per_second"] > 0
    assert {"val/i2s_top1", "val/s2i_top5"} <= set(metrics)
    model, cfg = load_model(out)
    assert cfg.n_bands == 2 and cfg.image_size == 32 and cfg.spectrum_length == 256
    # resume checkpoint loads with weights_only=True (no pickled objects)
    ck = torch.load(out / "resume" / "last.ckpt", weights_only=True)
    assert ck["galclip"]["batches_seen"] == 6


def test_interrupted_run_resumes_to_identical_weights(tiny_dataset, tmp_path, monkeypatch):
    run_pretrain(_cfg(tiny_dataset, tmp_path / "full"))
    original = PretrainModule.training_step

    def crash_at_5(self, batch, idx):
        if self.batches_seen == 4:  # the 5th step: after the checkpoint at step 3
            raise RuntimeError("simulated kill")
        return original(self, batch, idx)

    monkeypatch.setattr(PretrainModule, "training_step", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pretrain(_cfg(tiny_dataset, tmp_path / "cut"))
    assert torch.load(tmp_path / "cut" / "resume" / "last.ckpt", weights_only=True)["galclip"]["batches_seen"] == 3
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.setattr(PretrainModule, "training_step", original)
    m = run_pretrain(_cfg(tiny_dataset, tmp_path / "cut"))
    assert m["resumed_from_step"] == 3 and m["steps"] == 6
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different schedule length must not silently reuse the checkpoint
    with pytest.raises(InputFileError, match="train.steps"):
        run_pretrain(_cfg(tiny_dataset, tmp_path / "cut", steps=9))


def test_nan_steps_are_skipped_then_stop(tiny_dataset, tmp_path, monkeypatch):
    original = PretrainModule.compute_loss

    def nan_loss(self, batch, gen):
        loss, parts = original(self, batch, gen)
        return loss * float("nan") if self.batches_seen >= 4 else loss, parts

    monkeypatch.setattr(PretrainModule, "compute_loss", nan_loss)
    cfg = _cfg(tiny_dataset, tmp_path / "nan", steps=10)
    cfg.optim.max_bad_steps = 3
    with pytest.raises(GalclipError, match="non-finite"):
        run_pretrain(cfg)
    ck = torch.load(tmp_path / "nan" / "resume" / "last.ckpt", weights_only=True)
    assert ck["galclip"]["batches_seen"] == 3  # step-3 checkpoint kept, nothing written after
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())


def test_image_only_survey_pretrains_with_ssl(tmp_path):
    rng = np.random.default_rng(0)
    w = ShardWriter(tmp_path / "imgonly", ["g", "r", "i"], 32, None, label_columns=["merger"], shard_size=50,
                    provenance={"source": "test"})
    for i in range(40):
        img = rng.normal(0, 1, (3, 32, 32)).astype(np.float32)
        img[:, 10:22, 10:22] += 3 + i % 4
        w.add(dict(object_id=f"g{i}", ra=10.0, dec=1.0, z=np.nan, image_array=img, image_ivar=np.ones_like(img),
                   has_spectrum=False, merger=i % 2))
    w.close()
    cfg = _cfg(tmp_path / "imgonly", tmp_path / "run", steps=3)
    cfg.loss.ssl_image_weight = 0.0  # auto-enabled for a survey without spectra
    cfg.loss.ssl_spectrum_weight = 0.0
    m = run_pretrain(cfg)
    assert m["steps"] == 3 and m["skipped_steps"] == 0
    model, mcfg = load_model(tmp_path / "run")
    assert mcfg.n_bands == 3
    before = load_file(tmp_path / "run" / "model.safetensors")
    assert any("image" in k for k in before)


def test_tabular_second_tower_pretrains(tabular_survey, tmp_path):
    """spectrum.kind=tabular: catalogue columns take the spectrum's place (colleague's tower)."""
    cfg = _cfg(tabular_survey, tmp_path / "run", steps=3)
    cfg.model_options = {"spectrum": {"kind": "tabular", "width": 16, "depth": 1, "heads": 2}}
    m = run_pretrain(cfg)
    assert m["steps"] == 3 and m["paired_fraction"] > 0.9
    model, mcfg = load_model(tmp_path / "run")
    assert mcfg.spectrum.kind == "tabular" and mcfg.spectrum.options["columns"] == ["mass", "sfr"]
    assert "val/i2s_top1" in m


def test_streaming_data_path_runs(tiny_dataset, tmp_path):
    """Surveys over the cache limit stream through StreamingSurvey (here forced)."""
    cfg = _cfg(tiny_dataset, tmp_path / "stream", steps=4, cache="stream", num_workers=0)
    m = run_pretrain(cfg)
    assert m["data_mode"] == "stream" and m["steps"] == 4

