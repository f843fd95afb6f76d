"""Cross-modal retrieval of a pretrained model against a classical photometric baseline.

    .venv/bin/python benchmarks/bench_retrieval.py --run runs/demo/pretrain --data runs/demo/survey

On the pretraining run's own validation pool (same split as ``galclip pretrain``), each image
must find its own spectrum among all pool spectra and vice versa. Reported for:

* ``galclip``: the checkpoint's unit embeddings (cosine similarity);
* ``photometry_cca``: what an astronomer would do by hand — aperture photometry of the
  cutout (3 apertures × bands, arcsinh of the noise-unit sums) against synthetic photometry
  of the spectrum (median flux in 5 broad windows, arcsinh), matched with a canonical
  correlation analysis fitted on the training rows (Euclidean distance in CCA space).

Top-1/top-5 and the median rank of the true partner as a fraction of the pool (0 perfect,
≈ 0.5 chance). Writes ``benchmarks/results/retrieval.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.cross_decomposition import CCA

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.config import from_dict, read_yaml  # noqa: E402
from galclip.data.dataset import DataConfig, SurveyDataset  # noqa: E402
from galclip.data.preprocess import log_grid  # noqa: E402
from galclip.encode import embed_dataset, load_checkpoint, open_dataset  # noqa: E402
from galclip.pretrain.metrics import rank_summary, retrieval_ranks  # noqa: E402
from galclip.pretrain.train import TrainConfig, _split  # noqa: E402

WINDOWS = [(3900, 4500), (4500, 5500), (5500, 6900), (6900, 8400), (8400, 9100)]


def prepared_wave(ds: SurveyDataset) -> np.ndarray:
    """Wavelengths of the prepared spectrum pixels (rest-frame grid and binning applied)."""
    sp = ds.cfg.spectrum
    w = log_grid(sp.rest_wave_min, sp.rest_wave_max, sp.n_rest) if sp.rest_frame else np.asarray(ds.wave)
    k = max(1, sp.downsample)
    return w[: (w.size // k) * k].reshape(-1, k).mean(1)


def photometry(ds: SurveyDataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(aperture photometry of the images, synthetic broad-band photometry of the spectra)."""
    size = ds.cfg.image.size
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    apertures = [r < a for a in (3.8, 6.0, 10.0)]  # 3" fibre diameter at 0.396"/px, 2×, 4×
    wave = prepared_wave(ds)
    img_f, spec_f = [], []
    for i in rows:
        it = ds[int(i)]
        im = it["image"].numpy()
        img_f.append([np.arcsinh(im[:, a].sum(1) / 10.0) for a in apertures])
        flux = it["spectrum"].numpy() * 10 ** np.nan_to_num(it["spectrum_scale"])
        good = it["spectrum_ivar"].numpy() > 0
        feats = []
        for lo, hi in WINDOWS:
            m = good & (wave > lo) & (wave < hi)
            feats.append(np.arcsinh(np.median(flux[m]) / 0.1) if m.any() else 0.0)
        spec_f.append(feats)
    return np.asarray(img_f).reshape(len(rows), -1), np.asarray(spec_f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="pretraining run folder (model + config.yaml)")
    ap.add_argument("--data", required=True, help="the survey it was trained on")
    ap.add_argument("--components", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retrieval.json"))
    args = ap.parse_args()
    run = Path(args.run)
    resolved = read_yaml(run / "config.yaml")
    tc = from_dict(TrainConfig, resolved.get("train", {}))
    ckpt = load_checkpoint(run)
    full = open_dataset(ckpt, DataConfig(path=args.data))
    train_idx, val_idx = _split(len(full), tc, int(resolved.get("seed", 0)))
    paired = full.column("has_image") & full.column("has_spectrum")
    train_idx, val_idx = train_idx[paired[train_idx]], val_idx[paired[val_idx]]

    emb = embed_dataset(ckpt.model, full.subset(val_idx), progress=False)
    zi, zs = emb["image"], emb["spectrum"]
    result = {"run": str(run), "data": args.data, "n_pool": int(val_idx.size), "chance_top1": 1 / val_idx.size,
              "chance_top5": min(1.0, 5 / val_idx.size),
              "galclip": {"i2s": rank_summary(retrieval_ranks(zi, zs)), "s2i": rank_summary(retrieval_ranks(zs, zi))}}

    # the classical baseline fits on (a sample of) the training rows, like the model did
    fit_rows = np.random.default_rng(0).permutation(train_idx)[:3000]
    pi_tr, ps_tr = photometry(full, fit_rows)
    pi_va, ps_va = photometry(full, val_idx)
    cca = CCA(n_components=min(args.components, ps_tr.shape[1])).fit(pi_tr, ps_tr)
    a, b = cca.transform(pi_va, ps_va)

    def euclid_ranks(q: np.ndarray, k: np.ndarray) -> np.ndarray:
        d = ((q[:, None] - k[None]) ** 2).sum(-1)
        return (d < np.diag(d)[:, None]).sum(1)

    result["photometry_cca"] = {"i2s": rank_summary(euclid_ranks(a, b)), "s2i": rank_summary(euclid_ranks(b, a))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
