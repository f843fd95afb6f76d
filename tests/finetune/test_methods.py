"""The evaluation-method registry: each method states what it needs."""
from __future__ import annotations

import numpy as np

from galclip.finetune.evaluate import EvaluateConfig
from galclip.finetune.methods import ALL_METHODS, METHODS, Bench


def test_methods_declare_their_inputs() -> None:
    feats = {"pretrained": {"has_spectrum": np.zeros(4, bool)}, "random": {"has_spectrum": np.zeros(4, bool)}}
    bench = Bench(EvaluateConfig(), np.zeros(4, int), np.arange(2), feats)
    # image-only data, no tabular statistics, no SSL checkpoint, no cutouts read
    assert [n for n, m in METHODS.items() if m.available(bench)] == ["galclip_image", "random_init"]
    bench.features["pretrained"]["has_spectrum"][0] = True
    bench.tab, bench.tab_names, bench.morph_cols = np.zeros((4, 1)), ["gini"], [0]
    assert {n for n, m in METHODS.items() if not m.available(bench)} == {"image_ssl", "image_ssl_morph", "cnn_scratch"}
    assert ALL_METHODS[0] == "galclip_fusion" and len(ALL_METHODS) == 11
