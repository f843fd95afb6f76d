"""Speed options of pretraining (channels-last, torch.compile, fused AdamW) and the GPU recipe,
whose code paths run here on CPU. No timings: the speed itself is measured by
benchmarks/bench_throughput.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from galclip.config import load_config
from galclip.models import build_model, get_model_config
from galclip.models.config import PRESET_RUNTIME, runtime_hints
from galclip.pretrain.runtime import Runtime, apply_runtime, default_workers, resolve_runtime
from galclip.pretrain.train import PretrainConfig, run_pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def eager_compile(monkeypatch):
    """``nn.Module.compile`` traced by dynamo but without inductor's C++ build (seconds, not minutes);
    records the modules it was called on."""
    compiled: list[torch.nn.Module] = []
    original = torch.nn.Module.compile

    def compile_eager(self, *args, **kwargs):
        compiled.append(self)
        return original(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eager)
    torch._dynamo.reset()
    yield compiled
    torch._dynamo.reset()


def _preset_copy(tmp_path: Path, runtime: str) -> Path:
    src = (ROOT / "galclip" / "models" / "presets" / "tiny.yaml").read_text()
    path = tmp_path / "mine.yaml"
    path.write_text(src + runtime)
    return path


def test_explicit_options_win_over_the_preset_hint(tmp_path):
    path = _preset_copy(tmp_path, "runtime: {channels_last: true, compile: true, fused_adamw: true}\n")
    assert runtime_hints(str(path)) == {"channels_last": True, "compile": True, "fused_adamw": True}
    assert get_model_config(str(path)).name == "tiny"  # the runtime block is not part of the model
    assert resolve_runtime(str(path)) == Runtime(True, True, True)
    assert resolve_runtime(str(path), channels_last=False, compile=False, fused_adamw=False) == Runtime(False, False, False)
    assert resolve_runtime("tiny") == Runtime(False, False, None)  # no block: off / torch's default


def test_every_preset_runtime_block_names_known_options():
    assert set(PRESET_RUNTIME) >= {"small-cnn", "compact", "small"}
    for name, hints in PRESET_RUNTIME.items():
        assert set(hints) <= {"channels_last", "compile", "fused_adamw"}, name
        resolve_runtime(name)


def test_channels_last_keeps_the_outputs():
    torch.manual_seed(0)
    cfg = get_model_config("small-cnn", n_bands=2, image_size=32, spectrum_length=128)
    a = build_model(cfg).eval()
    b = build_model(cfg).eval()
    b.load_state_dict(a.state_dict())
    apply_runtime(b, Runtime(channels_last=True))
    conv = next(m for m in b.image_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    img = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.image_features(img), b.image_features(img), rtol=1e-4, atol=1e-4)
    assert all(v.is_contiguous() for v in a.state_dict().values())


def test_compile_is_in_place_and_keeps_state_dict_keys(eager_compile):
    torch.manual_seed(0)
    m = build_model(get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=128))
    keys = list(m.state_dict())
    apply_runtime(m, Runtime(compile=True))
    assert eager_compile == [m.image_encoder, m.spectrum_encoder]
    assert list(m.state_dict()) == keys
    zi, zs, _ = m(torch.randn(4, 2, 32, 32), torch.randn(4, 128), torch.ones(4, 128))
    assert zi.shape == zs.shape == (4, m.embed_dim)


def test_fused_option_reaches_adamw(tiny_dataset, tmp_path):
    from galclip.pretrain.module import OptimConfig, PretrainModule
    from galclip.pretrain.augment import AugmentConfig
    from galclip.pretrain.module import LossConfig

    m = build_model(get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=128))
    for fused, want in ((True, True), (None, None), (False, None)):
        opt = PretrainModule(m, LossConfig(), OptimConfig(fused=fused), AugmentConfig(), 10).configure_optimizers()
        assert opt["optimizer"].defaults.get("fused") == want
    assert PretrainModule(m, LossConfig(), OptimConfig(fused=False), AugmentConfig(),
                          10).configure_optimizers()["optimizer"].defaults["foreach"] is False


def test_default_workers_leaves_a_core_for_training():
    assert 1 <= default_workers() <= 8
    assert default_workers(limit=1) == 1


def test_gpu_recipe_runs_on_cpu(tiny_dataset, tmp_path, eager_compile):
    """configs/pretrain_gpu.yaml end to end on CPU: bf16 autocast, compiled channels-last towers,
    fused AdamW, streaming workers sized to the cores — tiny model and data."""
    cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain_gpu.yaml",
                      [f"data.path={tiny_dataset}", f"out={tmp_path / 'run'}", "model=tiny", "data.image.size=32",
                       "train.steps=3", "train.batch_size=8", "train.accelerator=cpu", "train.checkpoint_every=0",
                       "train.val_fraction=0.25", "progress=false", "optim.warmup_steps=1"])
    assert cfg.train.precision == "bf16-mixed" and cfg.train.compile and cfg.train.channels_last
    assert cfg.optim.fused and cfg.train.num_workers == -1
    m = run_pretrain(cfg)
    assert m["precision"] == "bf16-mixed" and m["steps"] == 3 and m["skipped_steps"] == 0
    assert m["runtime"] == {"channels_last": True, "compile": True, "fused_adamw": True}
    assert len(eager_compile) == 2
    assert all(torch.isfinite(torch.tensor(v)) for k, v in m.items() if k.startswith("val/"))


def test_streaming_with_workers_from_the_cores(tiny_dataset, tmp_path, monkeypatch):
    """train.num_workers=-1 streams through default_workers() DataLoader workers."""
    import galclip.pretrain.train as train

    seen: list[int] = []
    original = train.streaming_loader

    def spy(*args, **kwargs):
        seen.append(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "streaming_loader", spy)
    monkeypatch.setattr(train, "default_workers", lambda: 1)
    cfg = PretrainConfig(model="tiny", out=str(tmp_path / "run"), progress=False)
    cfg.data.path, cfg.data.image.size = str(tiny_dataset), 32
    cfg.train.steps, cfg.train.batch_size, cfg.train.checkpoint_every = 2, 8, 0
    cfg.train.cache, cfg.train.num_workers, cfg.train.val_fraction = "stream", -1, 0.25
    assert run_pretrain(cfg)["steps"] == 2
    assert seen == [1]
