"""FT-Transformer tabular encoder: name-keyed columns, learned missing tokens, training."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from galclip.errors import ConfigError
from galclip.models.tabular import TabularEncoder, TabularTower

COLS = ["flux_ha", "d4000", "gini", "m20", "survey"]
NAN = float("nan")


def _enc(**kw) -> TabularEncoder:
    torch.manual_seed(0)
    args = dict(dim=16, depth=2, heads=2, categorical={"survey": 3}, dropout=0.0)
    args.update(kw)
    return TabularEncoder(COLS, **args).eval()


def _x(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(COLS), generator=g)
    x[:, 4] = torch.randint(0, 3, (n,), generator=g).float()
    x[0, 1] = NAN
    x[1, 4] = NAN
    return x


def test_shapes_and_num_features():
    enc = _enc()
    x = _x()
    assert enc.num_features == 16
    assert enc(x).shape == (6, 16)
    assert enc.tokens(x).shape == (6, len(COLS) + 1, 16)
    assert torch.equal(enc(x), enc.tokens(x)[:, 0])
    again = TabularEncoder(**enc.config())
    assert again.config() == enc.config()


def test_column_permutation_invariance():
    enc = _enc()
    x = _x()
    ref = enc(x, COLS)
    ref_tok = enc.tokens(x, COLS)
    for seed in range(3):
        perm = torch.randperm(len(COLS), generator=torch.Generator().manual_seed(seed)).tolist()
        names = [COLS[i] for i in perm]
        torch.testing.assert_close(enc(x[:, perm], names), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(enc.tokens(x[:, perm], names), ref_tok, rtol=1e-5, atol=1e-6)
    # and the names matter: swapping values without their names changes the output
    swapped = x[:, [1, 0, 2, 3, 4]]
    assert not torch.allclose(enc(swapped, COLS), ref, atol=1e-4)


def test_unknown_and_missing_names_raise():
    enc = _enc()
    x = _x()
    with pytest.raises(ConfigError, match="unknown tabular column 'sfr'"):
        enc(x, ["sfr", "d4000", "gini", "m20", "survey"])
    with pytest.raises(ConfigError, match="missing tabular column 'survey'"):
        enc(x[:, :4], COLS[:4])
    with pytest.raises(ConfigError, match="encoder expects 5"):
        enc(x[:, :4])
    with pytest.raises(ConfigError, match="duplicate"):
        TabularEncoder(["a", "a"])
    with pytest.raises(ConfigError, match="not in columns"):
        TabularEncoder(["a"], categorical={"b": 2})


def test_missing_value_uses_learned_token_not_zero():
    enc = _enc()
    x = _x()
    x_nan, x_zero = x.clone(), x.clone()
    x_nan[2, 0] = NAN
    x_zero[2, 0] = 0.0
    assert not torch.allclose(enc(x_nan)[2], enc(x_zero)[2], atol=1e-5)
    # any non-finite value and any invalid categorical code are 'missing' alike
    x_inf, x_badcat, x_nancat = x.clone(), x.clone(), x.clone()
    x_inf[2, 0] = float("inf")
    torch.testing.assert_close(enc(x_inf), enc(x_nan))
    x_badcat[3, 4], x_nancat[3, 4] = 7.0, NAN
    torch.testing.assert_close(enc(x_badcat), enc(x_nancat))
    # the missing token is a parameter: changing it changes only rows with a missing value
    with torch.no_grad():
        before = enc(x_nan)
        enc.missing_token[0] += torch.randn(16)  # (a constant shift would vanish in LayerNorm)
        after = enc(x_nan)
    assert not torch.allclose(before[2], after[2]) and torch.allclose(before[3], after[3])


def test_all_missing_row_embeds_and_gradients_are_finite():
    enc = _enc(dropout=0.1).train()
    tower = TabularTower(enc, embed_dim=8, hidden_dim=32)
    x = _x(8)
    x[0] = NAN  # every column missing
    x[1, :4] = NAN
    z = tower(x, COLS)
    assert z.shape == (8, 8) and torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(8))
    target = torch.randn(8, 8)
    loss = F.mse_loss(z, target)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in tower.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    # the all-missing row really trains the missing tokens and the per-column weights of
    # present values get gradients too
    assert enc.missing_token.grad[:4].abs().sum() > 0
    assert enc.num_weight.grad.abs().sum() > 0
    assert enc.cat_embed.weight.grad.abs().sum() > 0
    raw = tower(x, COLS, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(8))


def test_gradcheck_through_missing_entries():
    """Analytic = numerical gradients w.r.t. the present values of rows that contain NaN."""
    torch.manual_seed(0)
    enc = TabularEncoder(["a", "b", "c"], dim=8, depth=1, heads=2, dropout=0.0).double().eval()
    template = torch.tensor([[0.3, NAN, -1.0], [NAN, NAN, NAN], [1.2, 0.5, NAN]], dtype=torch.float64)
    present = torch.isfinite(template)
    vals = template[present].clone().requires_grad_(True)

    def f(v: torch.Tensor) -> torch.Tensor:
        x = template.masked_scatter(present, v)
        return enc(x)

    assert torch.autograd.gradcheck(f, (vals,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_depth_zero_and_numeric_only():
    enc = TabularEncoder(["a", "b"], dim=8, depth=0, heads=1)
    out = enc(torch.tensor([[NAN, NAN], [1.0, 2.0]]))
    assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_learns_function_of_two_columns_with_30pct_missing():
    """y = 2a - b from 6 columns (4 distractors), 30 % of all entries missing."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, cols = 2048, ["a", "b", "c", "d", "e", "f"]
    full = rng.normal(size=(n, 6)).astype(np.float32)
    y = 2 * full[:, 0] - full[:, 1]
    x = full.copy()
    x[rng.random(x.shape) < 0.3] = np.nan
    order = [3, 1, 5, 0, 2, 4]  # training input in a shuffled column order, names travel along
    xt, yt = torch.from_numpy(x[:, order]), torch.from_numpy(y)
    names = [cols[i] for i in order]
    enc = TabularEncoder(cols, dim=32, depth=1, heads=2, dropout=0.0)
    head = torch.nn.Linear(32, 1)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread, and CPU time is then a fair clock
    try:
        t0 = time.process_time()  # CPU time: robust to other jobs sharing the machine
        for step in range(300):
            idx = torch.randint(0, 1536, (128,))
            loss = F.mse_loss(head(enc(xt[idx], names)).squeeze(-1), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert time.process_time() - t0 < 10
    finally:
        torch.set_num_threads(threads)
    enc.eval()
    with torch.no_grad():
        pred = head(enc(xt[1536:], names)).squeeze(-1).numpy()
    yv, xv = y[1536:], x[1536:]
    both = np.isfinite(xv[:, 0]) & np.isfinite(xv[:, 1])
    a_missing = ~np.isfinite(xv[:, 0]) & np.isfinite(xv[:, 1])
    mse_both = np.mean((pred[both] - yv[both]) ** 2)
    assert mse_both < 0.1 * np.var(yv)  # learned the function where it is determined
    # with a missing the best possible guess is E[y | b] = -b (residual variance 4):
    mse_a_missing = np.mean((pred[a_missing] - yv[a_missing]) ** 2)
    assert mse_a_missing < 5.0 and np.isfinite(pred).all()


# --------------------------------------------------------------------------- GalClip second tower
def _tab_dataset(tmp_path, n: int = 24):
    from galclip.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    cols = ["flux_ha", "d4000", "gini", "survey"]
    w = ShardWriter(tmp_path / "tab", ["g", "r"], 32, None, label_columns=["merger"], tabular_columns=cols,
                    shard_size=10)
    for i in range(n):
        img = rng.normal(0, 1, (2, 32, 32)).astype(np.float32)
        img[:, 12:20, 12:20] += 3 + i % 4
        tab = {"flux_ha": float(10 ** rng.normal(1, 1)), "d4000": float(rng.normal(1.5, 0.2)),
               "gini": None if i % 3 == 0 else float(rng.uniform(0.3, 0.7)), "survey": float(i % 2)}
        if i == 5:
            tab["d4000"] = -9999.0
        w.add(dict(object_id=f"o{i}", ra=10.0, dec=1.0, z=0.1, image_array=img, image_ivar=np.ones_like(img),
                   merger=i % 4 == 0, tabular=tab))
    w.close()
    return tmp_path / "tab"


def test_galclip_with_tabular_second_tower_trains_and_roundtrips(tmp_path):
    from galclip.data.dataset import SurveyDataset, collate
    from galclip.data.tabular import dataset_table
    from galclip.models import build_model, get_model_config, load_model, save_checkpoint
    from galclip.models.tabular_tower import TabularSecondTower, with_tabular_tower

    torch.manual_seed(0)
    ds = SurveyDataset(_tab_dataset(tmp_path))
    train = ds.subset(range(16))
    raw, names = dataset_table(train)
    base = get_model_config("tiny", n_bands=2, image_size=ds.cfg.image.size,
                            spectrum=dict(kind="tabular", width=16, depth=1, heads=2, dropout=0.0))
    cfg = with_tabular_tower(base, raw, names, categorical={"survey": 2})
    assert cfg.spectrum.kind == "tabular" and cfg.spectrum.options["columns"] == names
    model = build_model(cfg)
    tower = model.spectrum_encoder
    assert isinstance(tower, TabularSecondTower) and tower.prep is not None
    assert tower.prep.log_columns == ["flux_ha"]
    batch = collate([ds[i] for i in range(8)])
    x = tower.prepare(batch["tabular"], ds.tabular_names)
    assert torch.isnan(x[0, names.index("gini")]) and torch.isnan(x[5, names.index("d4000")])  # None, sentinel
    # one CLIP step: finite loss and gradients despite missing entries
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    zi, zt, scale = model(batch["image"], x, None)
    assert zt.shape == (8, cfg.embed_dim) and torch.allclose(zt.norm(dim=-1), torch.ones(8), atol=1e-5)
    logits = scale * zi @ zt.T
    target = torch.arange(8)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert tower.encoder.missing_token.grad.abs().sum() > 0
    opt.step()
    # ivar <= 0 marks entries missing (the spectrum-tower convention)
    ivar = torch.ones_like(x)
    ivar[:, 0] = 0
    x_nan = x.clone()
    x_nan[:, 0] = float("nan")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_spectrum(x, ivar), model.encode_spectrum(x_nan, None))
    # the one helper pretraining/embedding use to pick the second modality
    from galclip.models.tabular_tower import is_tabular_model, second_tower_inputs

    allmiss = dict(batch, tabular=torch.full_like(batch["tabular"], float("nan")))
    xs, iv, _, present = second_tower_inputs(model, allmiss, ds.tabular_names)
    assert is_tabular_model(model) and iv is None and not present.any() and xs.shape == x.shape
    with pytest.raises(ConfigError, match="tabular_names"):
        second_tower_inputs(model, batch)
    with pytest.raises(ConfigError, match="missing tabular column 'gini'"):
        tower.prepare(batch["tabular"][:, [0, 1, 3]], ["flux_ha", "d4000", "survey"])
    # checkpoint: weights + preprocessing round-trip through safetensors/JSON
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    again, cfg2 = load_model(tmp_path / "ckpt")
    assert cfg2.spectrum.options["prep"] == cfg.spectrum.options["prep"]
    x2 = again.spectrum_encoder.prepare(batch["tabular"], ds.tabular_names)
    torch.testing.assert_close(x2, x, equal_nan=True)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_spectrum(x2, None), model.encode_spectrum(x, None))


def test_resolve_tabular_tower_fits_on_training_rows_only(tmp_path):
    from galclip.data.dataset import SurveyDataset
    from galclip.errors import InputFileError
    from galclip.models import get_model_config
    from galclip.models.tabular_tower import resolve_tabular_tower

    ds = SurveyDataset(_tab_dataset(tmp_path))
    spec = get_model_config("tiny", n_bands=2, image_size=64)
    assert resolve_tabular_tower(spec, ds, range(10)) is spec  # spectrum towers: untouched
    cfg = get_model_config("tiny", n_bands=2, image_size=64,
                           spectrum=dict(kind="tabular", width=16, depth=1, heads=2,
                                         options={"columns": ["gini", "d4000"], "categorical": {}}))
    out = resolve_tabular_tower(cfg, ds, range(10))
    prep = out.spectrum.options["prep"]
    assert out.spectrum.options["columns"] == ["gini", "d4000"]
    train_d4000 = [ds[i]["tabular"][1].item() for i in range(10) if i != 5]  # row 5: sentinel
    assert prep["stats"]["d4000"]["center"] == pytest.approx(float(np.median(train_d4000)), rel=1e-5)
    assert resolve_tabular_tower(out, ds) is out  # already fitted: kept as saved
    cfg_log = get_model_config("tiny", n_bands=2, image_size=64,
                               spectrum=dict(kind="tabular", width=16, depth=1, heads=2,
                                             options={"prep_config": {"log_columns": ["d4000"], "clip": 4.0}}))
    fitted = resolve_tabular_tower(cfg_log, ds, range(10)).spectrum.options["prep"]
    assert fitted["stats"]["d4000"]["log"] and not fitted["stats"]["flux_ha"]["log"]
    assert fitted["config"]["clip"] == 4.0
    bad_key = get_model_config("tiny", spectrum=dict(kind="tabular", width=16, depth=1, heads=2,
                                                     options={"prep_config": {"clipp": 4.0}}))
    with pytest.raises(ConfigError, match="clipp"):
        resolve_tabular_tower(bad_key, ds)
    bad = get_model_config("tiny", spectrum=dict(kind="tabular", width=16, depth=1, heads=2,
                                                 options={"columns": ["sersic_n"]}))
    with pytest.raises(InputFileError, match="missing tabular column 'sersic_n'"):
        resolve_tabular_tower(bad, ds)


def test_tabular_tower_config_errors():
    from galclip.models import build_model, get_model_config

    with pytest.raises(ConfigError, match="needs spectrum.options.columns"):
        build_model(get_model_config("tiny", spectrum=dict(kind="tabular", width=16, depth=1, heads=2)))
    with pytest.raises(ConfigError, match="not a tabular tower option"):
        build_model(get_model_config("tiny", spectrum=dict(kind="tabular", width=16, depth=1, heads=2,
                                                           options={"columns": ["a"], "colums": 1})))


def test_augment_tabular_views():
    from galclip.pretrain.scarf import augment_tabular

    x = torch.randn(2000, 5)
    x[:, 0] = NAN
    g = torch.Generator().manual_seed(0)
    v = augment_tabular(x, drop=0.2, jitter=0.1, generator=g)
    assert torch.isnan(v[:, 0]).all()  # missing stays missing
    dropped = torch.isnan(v[:, 1:]).float().mean().item()
    assert 0.17 < dropped < 0.23
    kept = ~torch.isnan(v[:, 1:])
    diff = (v[:, 1:] - x[:, 1:])[kept]
    assert 0.08 < diff.std().item() < 0.12
    assert augment_tabular(x, drop=0, jitter=0) is x
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(augment_tabular(x, generator=g1), augment_tabular(x, generator=g2), equal_nan=True)


def test_scarf_pretrain_learns_without_labels():
    from galclip.pretrain.scarf import scarf_pretrain

    rng = np.random.default_rng(0)
    z = rng.normal(size=(128, 2)).astype(np.float32)  # two latent factors behind 6 columns
    x = np.concatenate([z, z @ rng.normal(size=(2, 4)).astype(np.float32)], axis=1)
    x += 0.1 * rng.normal(size=x.shape).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    cols = list("abcdef")

    def run() -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        enc = TabularEncoder(cols, dim=16, depth=1, heads=2, dropout=0.0)
        hist = scarf_pretrain(enc, torch.from_numpy(x[:, ::-1].copy()), epochs=8, batch_size=64,
                              columns=cols[::-1], seed=1)
        with torch.no_grad():
            return hist, enc(torch.from_numpy(x))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hist, feats = run()
        hist2, feats2 = run()
    finally:
        torch.set_num_threads(threads)
    assert len(hist) == 8 and all(np.isfinite(hist)) and hist[-1] < hist[0] - 0.2
    assert torch.isfinite(feats).all()
    assert hist2 == hist and torch.equal(feats, feats2)  # seeded: reproducible
    with pytest.raises(ConfigError, match="at least 2 rows"):
        scarf_pretrain(TabularEncoder(cols, dim=8, depth=1, heads=2), torch.zeros(1, 6))


def test_tabular_as_spectrum_runs_the_unchanged_pretrain_and_embed_code(tmp_path):
    """The image↔spectrum trainer's loss and embed_dataset work on the catalogue view."""
    from galclip.data.dataset import SurveyDataset, collate
    from galclip.models import build_model, get_model_config
    from galclip.models.tabular_tower import resolve_tabular_tower
    from galclip.models.tabular_view import TabularAsSpectrum
    from galclip.pretrain.augment import AugmentConfig
    from galclip.encode import embed_dataset
    from galclip.pretrain.module import LossConfig, OptimConfig, PretrainModule

    torch.manual_seed(0)
    full = SurveyDataset(_tab_dataset(tmp_path))
    cfg = get_model_config("tiny", n_bands=2, image_size=full.cfg.image.size,
                           spectrum=dict(kind="tabular", width=16, depth=1, heads=2))
    cfg = resolve_tabular_tower(cfg, full, range(16))
    view = TabularAsSpectrum(full, cfg)
    assert view.spectrum_length == cfg.spectrum_length == 4 and view.label_names == full.label_names
    item = view[0]  # row 0: gini missing
    j = view.columns.index("gini")
    assert item["spectrum_ivar"][j] == 0 and item["spectrum_ivar"].sum() > 0 and item["has_spectrum"]
    assert view.column("has_spectrum").all() and len(view.subset(range(5))) == 5
    model = build_model(cfg)
    module = PretrainModule(model, LossConfig(), OptimConfig(), AugmentConfig(), total_steps=10,
                            target_names=full.label_names)
    batch = collate([view[i] for i in range(8)])
    loss, parts = module.compute_loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "clip" in parts
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the catalogue view embeds like a spectrum; the result equals the direct tower call
    out = embed_dataset(model.eval(), view, batch_size=10, progress=False)
    assert out["spectrum"].shape == (len(full), cfg.embed_dim) and np.isfinite(out["spectrum"]).all()
    with torch.no_grad():
        raw = collate([full[i] for i in range(3)])["tabular"]
        direct = model.encode_spectrum(model.spectrum_encoder.prepare(raw, full.tabular_names), None)
    np.testing.assert_allclose(out["spectrum"][:3], direct.numpy(), rtol=1e-4, atol=1e-5)


def test_pretrain_and_embed_cli_stages_with_tabular_tower(tmp_path):
    """``galclip pretrain model_options.spectrum.kind=tabular`` → checkpoint → ``galclip embed``."""
    from galclip.config import load_config
    from galclip.models import load_model
    from galclip.embeddings import read_embeddings
    from galclip.pretrain.embed import EmbedConfig, run_embed
    from galclip.pretrain.train import PretrainConfig, run_pretrain

    data = _tab_dataset(tmp_path)
    cfg = load_config(PretrainConfig, None, [
        f"data.path={data}", "data.image.size=32", "model=tiny", f"out={tmp_path / 'run'}", "progress=false",
        "model_options.spectrum.kind=tabular", "model_options.spectrum.width=16", "model_options.spectrum.depth=1",
        "model_options.spectrum.heads=2", "train.steps=3", "train.batch_size=8", "train.val_fraction=0.25",
        "train.checkpoint_every=0", "optim.warmup_steps=1"])
    metrics = run_pretrain(cfg)
    assert metrics["steps"] == 3 and metrics["paired_fraction"] == 1.0
    model, mcfg = load_model(tmp_path / "run")
    prep = mcfg.spectrum.options["prep"]
    assert mcfg.spectrum.kind == "tabular" and prep["columns"] == ["flux_ha", "d4000", "gini", "survey"]
    assert "flux_ha" in [c for c, st in prep["stats"].items() if st["log"]]
    ecfg = load_config(EmbedConfig, None, [f"data.path={data}", "data.image.size=32", "device=cpu",
                                           f"checkpoint={tmp_path / 'run'}", f"out={tmp_path / 'emb.h5'}"])
    arrays, meta = read_embeddings(run_embed(ecfg))
    assert arrays["spectrum"].shape == (24, mcfg.embed_dim) and np.isfinite(arrays["spectrum"]).all()
    assert np.isfinite(arrays["joint"]).all()
