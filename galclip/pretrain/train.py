"""``galclip pretrain``: contrastive image-spectrum pretraining with PyTorch Lightning.

Output directory::

    config.yaml          resolved config (incl. the full model config) of this run
    model.safetensors    final weights  ┐ galclip.models.load_model(out)
    model.json           model config   ┘
    metrics.json         final validation metrics, pairs/s, steps, wall time
    resume/last.ckpt     Lightning training state (weights, AdamW, scheduler, step) for resume
    logs/                CSV (logs/csv/.../metrics.csv) and TensorBoard logs

Resume: rerunning the same command with ``resume=auto`` (default) continues from
``resume/last.ckpt``; the checkpoint holds only tensors and plain containers and is loaded
with ``torch.load(weights_only=True)``. It is replaced atomically and only when all
weights are finite, so a diverging run never overwrites the last good state.

Distributed: ``train.strategy=ddp train.devices=N`` (``torchrun``/SLURM environments are
detected by Lightning); negatives are gathered across ranks (:mod:`galclip.pretrain.losses`).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from galclip.config import deep_merge, dump_yaml, from_dict, to_dict
from galclip.data.dataset import DataConfig, StreamingSurvey, SurveyDataset
from galclip.errors import ConfigError, GalclipError, InputFileError
from galclip.models.checkpoint import save_checkpoint
from galclip.models.config import DEFAULT_MODEL, ModelConfig, get_model_config
from galclip.models.galclip import build_model
from galclip.models.tabular_tower import resolve_tabular_tower
from galclip.models.tabular_view import TabularAsSpectrum
from galclip.pretrain.augment import AugmentConfig
from galclip.pretrain.data import (StepBatchSampler, cache_size_bytes, load_tensors, memory_loader,
                                   streaming_loader)
from galclip.pretrain.module import LossConfig, OptimConfig, PretrainModule
from galclip.pretrain.morph_targets import MorphTargets, build_targets
from galclip.pretrain.runtime import Runtime, apply_runtime, default_workers, resolve_runtime
from galclip.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Run length, batch and hardware.

    Attributes:
        steps: optimiser steps of the run.
        batch_size: *global* batch (split evenly over ranks; negatives gathered).
        accelerator, devices, num_nodes, strategy: passed to ``pl.Trainer``
            (``strategy=ddp`` for multi-GPU; ``devices`` is ``auto`` or a count).
        precision: ``auto`` (bf16-mixed on CUDA, 32-true on CPU) or a Lightning value.
        threads: torch CPU threads (0 = leave as is).
        cache: ``auto`` (in memory when under ``cache_max_gb``), ``memory`` or ``stream``.
        cache_max_gb: size limit of the in-memory cache.
        num_workers: DataLoader workers when streaming (-1 = one per available core less
            the training process, at most 8: :func:`galclip.pretrain.runtime.default_workers`).
        channels_last: image tower in NHWC layout; ``null`` = the model preset's measured
            choice (its ``runtime:`` block, :mod:`galclip.pretrain.runtime`).
        compile: ``torch.compile`` both towers (the first step then takes tens of seconds
            on a CPU); ``null`` = the preset's choice.
        checkpoint_every: steps between resume checkpoints (0 = only at the end).
        val_every: steps between validations (0 = only at the end).
        log_every: steps between logged training scalars.
        val_fraction, val_max: held-out validation pool (fraction of rows, capped).
    """

    steps: int = 300
    batch_size: int = 128
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    threads: int = 0
    cache: str = "auto"
    cache_max_gb: float = 4.0
    num_workers: int = 2
    channels_last: bool | None = None
    compile: bool | None = None
    checkpoint_every: int = 100
    val_every: int = 0
    log_every: int = 10
    val_fraction: float = 0.1
    val_max: int = 1000


@dataclasses.dataclass
class PretrainConfig:
    """``galclip pretrain`` configuration.

    Attributes:
        data: training survey.
        model: preset name (``galclip.models.list_models()``) or a model YAML path.
        model_options: overrides merged into the preset (e.g. ``{embed_dim: 256}``).
        out: run directory.
        seed: seed of the split, data order, initialisation and augmentations.
        resume: ``auto`` (continue from ``out/resume/last.ckpt`` if present), ``never``, or
            the path of a resume checkpoint.
        progress: show progress bars.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: str = DEFAULT_MODEL
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = "runs/pretrain"
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    resume: str = "auto"
    progress: bool = True


def resolve_model_config(cfg: PretrainConfig, n_bands: int, image_size: int, spectrum_length: int) -> ModelConfig:
    """Preset (+ options) with the dataset's bands, cutout size and spectrum length filled in."""
    base = to_dict(get_model_config(cfg.model))
    merged = deep_merge(base, cfg.model_options)
    merged["n_bands"] = max(1, n_bands)
    merged["image_size"] = image_size
    if spectrum_length > 0:
        merged["spectrum_length"] = spectrum_length
    return from_dict(ModelConfig, merged)


class SafeCheckpoint(Callback):
    """Atomically replace ``resume/last.ckpt`` every N steps — only with finite weights."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = path, every
        self.saved_at = -1
        self.seconds = 0.0  # time spent writing checkpoints (reported apart from throughput)

    def _save(self, trainer: pl.Trainer, module: PretrainModule) -> None:
        if module.batches_seen == self.saved_at:
            return
        t0 = time.perf_counter()
        bad = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise GalclipError(f"weights became non-finite ({bad[0]}) at step {module.batches_seen}; "
                               f"not overwriting the last good checkpoint {self.path}")
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("galclip-ckpt")
        self.saved_at = module.batches_seen
        self.seconds += time.perf_counter() - t0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.every > 0 and pl_module.batches_seen % self.every == 0:
            self._save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._save(trainer, pl_module)


class Throughput(Callback):
    """Steady-state training throughput: wall time from the end of the first step to the end
    of the last, excluding validation and checkpoint writes → pairs per second, and the
    data-wait share.

    The first step (lazy initialisation, optimiser state allocation) is left out, as a
    benchmark's warm-up would be. ``data_wait`` is the time between the end of one training
    step and the start of the next (batch fetch + Lightning bookkeeping): the time the
    training core is not computing.
    """

    def __init__(self, checkpoint: SafeCheckpoint | None = None) -> None:
        self.checkpoint = checkpoint
        self.data_wait = 0.0
        self._end: float | None = None
        self.t0 = 0.0
        self.val_time = 0.0
        self._v0 = 0.0
        self.ckpt_time = 0.0
        self.train_time = 0.0
        self.batches = 0
        self.start_batches = 0
        self._ckpt0 = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._end is not None:
            self.data_wait += time.perf_counter() - self._end

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._end = time.perf_counter()
        if not self.t0:  # the clock starts after the first (warm-up) step
            self.t0 = self._end
            self.start_batches = pl_module.batches_seen
            self._ckpt0 = self.checkpoint.seconds if self.checkpoint else 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.val_time += time.perf_counter() - self._v0
        self._end = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.t0 and self._end is not None:
            self.ckpt_time = (self.checkpoint.seconds - self._ckpt0) if self.checkpoint else 0.0
            self.train_time = self._end - self.t0 - self.val_time - self.ckpt_time
            self.batches = pl_module.batches_seen - self.start_batches


def run_runtime(cfg: PretrainConfig) -> Runtime:
    """The run's speed options: explicit ``train.channels_last``/``train.compile``/``optim.fused``,
    else the model preset's measured choice."""
    return resolve_runtime(cfg.model, cfg.train.channels_last, cfg.train.compile, cfg.optim.fused)


def build_module(cfg: PretrainConfig, mcfg: ModelConfig, loss_cfg: LossConfig, rt: Runtime,
                 label_names: list[str], use_images: bool = True, use_spectra: bool = True,
                 morph: MorphTargets | None = None) -> PretrainModule:
    """The seeded model with the run's speed options applied, wrapped for training.

    ``run_pretrain`` trains exactly this; ``benchmarks/bench_throughput.py`` times its
    bare step, so the two measure the same model, losses and optimiser.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = apply_runtime(build_model(mcfg), rt)
    optim = dataclasses.replace(cfg.optim, fused=rt.fused_adamw)
    return PretrainModule(model, loss_cfg, optim, cfg.augment, cfg.train.steps, cfg.seed, label_names,
                          use_images=use_images, use_spectra=use_spectra, log_every=cfg.train.log_every,
                          morph=morph)


def _split(n: int, cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng([seed, 99]).permutation(n)
    n_val = min(cfg.val_max, int(round(cfg.val_fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _resume_path(cfg: PretrainConfig, out: Path) -> Path | None:
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        p = out / "resume" / "last.ckpt"
        return p if p.exists() else None
    p = Path(cfg.resume)
    if not p.exists():
        raise InputFileError(p, "resume checkpoint not found")
    return p


def _read_resume(path: Path, mcfg: ModelConfig, steps: int) -> int:
    """Start step of a resume checkpoint; refuses one from a different model or schedule."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/foreign file
        raise InputFileError(path, f"cannot read resume checkpoint ({exc.__class__.__name__})") from None
    state = ck.get("galclip") if isinstance(ck, dict) else None
    if not state:
        raise InputFileError(path, "not a galclip resume checkpoint")
    if state.get("model_config") != to_dict(mcfg):
        raise InputFileError(path, "resume checkpoint was made with a different model config")
    if int(state.get("total_steps", steps)) != steps:
        raise InputFileError(path, f"resume checkpoint belongs to a run of train.steps={state['total_steps']} "
                                   f"(the LR schedule depends on it); use resume=never to start a new run")
    return int(state["batches_seen"])


def _devices(value: str) -> Any:
    return int(value) if str(value).isdigit() else value


def _quiet_lightning() -> None:
    """Silence Lightning notices that are expected here (step-based resume, in-memory loaders)."""
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def resolve_losses(cfg: PretrainConfig, use_images: bool, use_spectra: bool, morph: bool = False) -> LossConfig:
    """The loss config, with the SSL term switched on for a tower that has no partner modality
    (and, for the image tower, no morphology targets either)."""
    loss_cfg = copy.deepcopy(cfg.loss)
    if not use_spectra and loss_cfg.ssl_image_weight <= 0 and not morph:
        log.info("dataset has no spectra: training the image tower with the SSL term only (loss.ssl_image_weight=1)")
        loss_cfg.ssl_image_weight = 1.0
    if not use_images and loss_cfg.ssl_spectrum_weight <= 0:
        log.info("dataset has no images: training the spectrum tower with the SSL term only")
        loss_cfg.ssl_spectrum_weight = 1.0
    return loss_cfg


def load_morph_targets(cfg: PretrainConfig, full: SurveyDataset, train_idx: np.ndarray,
                       use_images: bool) -> MorphTargets | None:
    """The morphology regression targets when ``loss.morph_weight`` > 0 (None, logged, when the
    survey stores no ``morph_*`` columns: ingest with ``morphology: true`` to get them)."""
    if cfg.loss.morph_weight <= 0 or not use_images:
        return None
    morph = build_targets(full, train_idx, cfg.loss.morph_columns, mask_flag=cfg.loss.morph_mask_flag)
    if morph is None:
        log.warning("loss.morph_weight=%g but %s stores no morphology columns: the term is off "
                    "(ingest with morphology: true)", cfg.loss.morph_weight, cfg.data.path)
    else:
        log.info("regressing %d morphology statistics (%.0f%% measured)", len(morph.names),
                 100 * float(morph.present.float().mean()))
    return morph


def _trainer(cfg: PretrainConfig, out: Path, precision: str,
             find_unused: bool) -> tuple[pl.Trainer, list[Any], SafeCheckpoint, Throughput]:
    """Lightning trainer with the run's loggers, safe checkpointing and throughput timing.

    ``find_unused``: a single-modality run leaves a tower without gradients, which DDP must be told.
    """
    tc = cfg.train
    strategy: Any = tc.strategy
    if tc.strategy.startswith("ddp") and find_unused:
        from pytorch_lightning.strategies import DDPStrategy
        strategy = DDPStrategy(find_unused_parameters=True)
    logs = [CSVLogger(str(out / "logs"), name="csv"), TensorBoardLogger(str(out / "logs"), name="tb")]
    ckpt_path = out / "resume" / "last.ckpt"
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    saver = SafeCheckpoint(ckpt_path, tc.checkpoint_every)
    timer = Throughput(saver)
    callbacks: list[Callback] = [saver, timer]
    if cfg.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = pl.Trainer(accelerator=tc.accelerator, devices=_devices(tc.devices), num_nodes=tc.num_nodes,
                         strategy=strategy, precision=precision, max_epochs=1, max_steps=-1, logger=logs,
                         callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=cfg.progress,
                         enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                         log_every_n_steps=tc.log_every,
                         val_check_interval=tc.val_every if 0 < tc.val_every < tc.steps else None,
                         limit_val_batches=1.0 if 0 < tc.val_every < tc.steps else 0, default_root_dir=str(out))
    return trainer, logs, saver, timer


def _train_loader(cfg: PretrainConfig, full: Any, train_ds: Any, val_idx: np.ndarray, start: int, rank: int,
                  world: int, pin: bool) -> tuple[Any, str]:
    """(loader, data mode): the training rows cached in memory, or streamed from the shards."""
    tc = cfg.train
    mode = tc.cache
    if mode == "auto":
        mode = "memory" if cache_size_bytes(train_ds) < tc.cache_max_gb * 1e9 else "stream"
    if mode == "memory":
        tensors = load_tensors(train_ds, progress=cfg.progress)
        sampler = StepBatchSampler(len(train_ds), tc.batch_size, tc.steps, cfg.seed, rank, world, start)
        return memory_loader(tensors, sampler, pin), mode
    if mode == "stream" and isinstance(full, TabularAsSpectrum):
        raise ConfigError("the tabular second tower trains from the in-memory cache: use train.cache=memory")
    if mode == "stream":
        survey = StreamingSurvey(cfg.data, seed=cfg.seed, shuffle=True)
        workers = default_workers() if tc.num_workers < 0 else tc.num_workers
        return streaming_loader(survey, tc.batch_size // world, tc.steps, start, workers, pin,
                                exclude=set(int(i) for i in val_idx)), mode
    raise ConfigError(f"train.cache must be auto, memory or stream, got {tc.cache!r}")


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain a GalClip model on ``cfg.data``; returns the final metrics (also in metrics.json)."""
    if not cfg.data.path:
        raise ConfigError("data.path is required")
    tc = cfg.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    _quiet_lightning()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    full = SurveyDataset(cfg.data)
    n_rows = len(full)
    use_images, use_spectra = full.n_bands > 0, full.spectrum_length > 0
    mcfg = resolve_model_config(cfg, full.n_bands, cfg.data.image.size, full.spectrum_length)
    train_idx, val_idx = _split(n_rows, tc, cfg.seed)
    morph = load_morph_targets(cfg, full, train_idx, use_images)
    if mcfg.spectrum.kind == "tabular":  # catalogue measurements as the second tower
        mcfg = resolve_tabular_tower(mcfg, full, train_idx)  # preprocessing fitted on training rows
        full, use_spectra = TabularAsSpectrum(full, mcfg), True
    loss_cfg = resolve_losses(cfg, use_images, use_spectra, morph is not None)
    resolved = to_dict(cfg)
    resolved["loss"] = to_dict(loss_cfg)
    if morph is not None:
        resolved["morph_targets"] = morph.summary()
    resolved["resolved_model"] = to_dict(mcfg)
    rt = run_runtime(cfg)
    resolved["resolved_runtime"] = dataclasses.asdict(rt)
    atomic_write_text(out / "config.yaml", dump_yaml(resolved))

    resume = _resume_path(cfg, out)
    start = _read_resume(resume, mcfg, tc.steps) if resume else 0
    if start >= tc.steps:
        log.info("run already complete at step %d (train.steps=%d)", start, tc.steps)

    module = build_module(cfg, mcfg, loss_cfg, rt, full.label_names, use_images, use_spectra, morph)
    model = module.model

    accel = tc.accelerator
    cuda = torch.cuda.is_available() and accel in ("auto", "gpu", "cuda")
    precision = tc.precision if tc.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    trainer, logs, saver, timer = _trainer(cfg, out, precision, find_unused=not (use_images and use_spectra))
    rank, world = trainer.global_rank, trainer.world_size
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by {world} ranks")
    pin = cuda
    train_ds, val_ds = full.subset(train_idx), full.subset(val_idx)
    train_loader, mode = _train_loader(cfg, full, train_ds, val_idx, start, rank, world, pin)
    val_tensors = load_tensors(val_ds, progress=False) if len(val_ds) else None
    val_loader = (memory_loader(val_tensors, _SequentialBatches(len(val_ds), 256), pin)
                  if val_tensors is not None else None)
    log.info("pretraining %s (%d params) on %d rows (%d val), %s data, %d steps × %d, precision %s, %s",
             mcfg.name, sum(p.numel() for p in model.parameters()), len(train_ds), len(val_ds), mode, tc.steps,
             tc.batch_size, precision, rt)
    t0 = time.perf_counter()
    if start < tc.steps:
        trainer.fit(module, train_loader, val_loader if tc.val_every > 0 else None,
                    ckpt_path=str(resume) if resume else None, weights_only=True)
    elif resume:
        module.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True)["state_dict"])
    fit_time = time.perf_counter() - t0
    metrics: dict[str, Any] = {}
    if val_loader is not None:
        trainer_v = pl.Trainer(accelerator=accel, devices=1, precision=precision, logger=False,
                               enable_progress_bar=False, enable_model_summary=False)
        trainer_v.validate(module, val_loader, verbose=False)
        metrics.update({f"val/{k}": v for k, v in module.val_metrics.items()})
        if trainer.is_global_zero:
            for lg in logs:  # final validation into the run's CSV/TensorBoard logs too
                lg.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, step=module.batches_seen)
                lg.save()
    pairs = timer.batches * tc.batch_size
    metrics.update({"steps": int(module.batches_seen), "skipped_steps": int(module.skipped_steps),
                    "resumed_from_step": start, "train_seconds": timer.train_time, "fit_seconds": fit_time,
                    "checkpoint_seconds": saver.seconds,
                    "objects_per_second": pairs / timer.train_time if timer.train_time > 0 else float("nan"),
                    "data_wait_fraction": timer.data_wait / timer.train_time if timer.train_time > 0 else float("nan"),
                    "paired_fraction": float(np.mean(full.column("has_spectrum")[train_idx]
                                                     & full.column("has_image")[train_idx])),
                    "global_batch": tc.batch_size, "world_size": world, "precision": precision,
                    "runtime": dataclasses.asdict(rt),
                    "model": mcfg.name, "n_train": len(train_ds), "n_val": len(val_ds), "data_mode": mode})
    metrics["pairs_per_second"] = metrics["objects_per_second"] * metrics["paired_fraction"]
    if trainer.is_global_zero:
        save_checkpoint(module.model, mcfg, out, extra={"steps": module.batches_seen, "seed": cfg.seed,
                                                        "preprocessing": {"image": to_dict(cfg.data.image),
                                                                          "spectrum": to_dict(cfg.data.spectrum)},
                                                        "data": str(Path(cfg.data.path).resolve())})
        atomic_write_json(out / "metrics.json", metrics)
        log.info("done: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
                              if k.startswith("val/") or k.endswith("per_second")})
    return metrics


class _SequentialBatches(torch.utils.data.Sampler):
    """Consecutive row batches (validation: every rank sees the whole pool)."""

    def __init__(self, n: int, batch: int) -> None:
        self.n, self.batch = n, batch

    def __len__(self) -> int:
        return (self.n + self.batch - 1) // self.batch

    def __iter__(self):
        for a in range(0, self.n, self.batch):
            yield list(range(a, min(self.n, a + self.batch)))
