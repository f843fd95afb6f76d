"""How a pretraining step runs on the hardware: memory format, compilation, optimiser kernel.

None of these options changes the model or the objective (only float rounding); they change
how fast a step runs, and which one wins depends on the model *and* the hardware: oneDNN
convolutions on a CPU run faster on channels-last tensors, ``torch.compile`` pays for its
compile time on small CNN and 1-D towers but not on every backbone. So the choice is
measured per preset (``benchmarks/bench_throughput.py``) and recorded in the preset's
``runtime:`` block (``galclip/models/presets/*.yaml``); ``train.channels_last``,
``train.compile`` and ``optim.fused`` override it (``null`` = the preset's choice).
"""
from __future__ import annotations

import dataclasses
import logging
import os

import torch

from galclip.models.config import runtime_hints
from galclip.models.galclip import GalClip

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Resolved speed options of one run.

    Attributes:
        channels_last: image tower weights (and so its activations) in NHWC layout.
        compile: ``torch.compile`` both towers (in place: state-dict keys are unchanged).
        fused_adamw: AdamW's fused kernel (True), its for-loop (False) or torch's default (None).
    """

    channels_last: bool = False
    compile: bool = False
    fused_adamw: bool | None = None


def resolve_runtime(model: str, channels_last: bool | None = None, compile: bool | None = None,
                    fused_adamw: bool | None = None) -> Runtime:
    """Explicit options, else the preset's measured ``runtime:`` choice, else off."""
    hints = runtime_hints(model)

    def pick(value: bool | None, key: str, default: bool | None) -> bool | None:
        if value is not None:
            return bool(value)
        hint = hints.get(key, default)
        return None if hint is None else bool(hint)

    return Runtime(channels_last=bool(pick(channels_last, "channels_last", False)),
                   compile=bool(pick(compile, "compile", False)),
                   fused_adamw=pick(fused_adamw, "fused_adamw", None))


def apply_runtime(model: GalClip, rt: Runtime) -> GalClip:
    """Put ``model`` in the run's memory format and compile its towers (in place).

    Only the weights are converted to channels-last: a convolution whose weight is NHWC
    returns NHWC activations, so the layout propagates from the first layer without
    touching the data pipeline. Checkpoints are unaffected (saved contiguous).
    """
    if rt.channels_last:
        model.image_encoder.to(memory_format=torch.channels_last)
    if rt.compile:
        model.image_encoder.compile()
        model.spectrum_encoder.compile()
    return model


def default_workers(limit: int = 8) -> int:
    """DataLoader workers for streaming: one per core this process may use, less the one
    that drives the training loop (capped; at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores - 1))
