"""Galleries: RGB composites, PNG contact sheets and the self-contained HTML report."""
from __future__ import annotations

import re

import numpy as np

from galclip.gallery import gallery_png, html_report, items_from_dataset, rgb_composite


def test_rgb_composite_is_uint8_and_brightens_the_galaxy():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (5, 40, 40)).astype(np.float32)
    img[:, 15:25, 15:25] += 50
    rgb = rgb_composite(img)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    assert rgb[15:25, 15:25].mean() > 4 * rgb[:5, :5].mean()
    assert rgb_composite(img[:1]).shape == (40, 40, 3)  # single band works
    assert np.isfinite(rgb_composite(np.full((3, 8, 8), np.nan, np.float32))).all()


def test_gallery_and_html_report(tmp_path, tiny_dataset):
    ids = ["obj000", "obj004", "obj009", "unknown"]
    items = items_from_dataset(tiny_dataset, ids, scores=[1.0, 0.9, 0.8, 0.7], ranks=[0, 1, 2, 3])
    assert items[1].flux is None and items[1].image is not None  # obj004, obj009 have no spectrum
    assert items[3].image is None and items[3].flux is None  # not in the dataset: listed, no pixels
    png = gallery_png(items, tmp_path / "g.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    items[0].extra = {"p_merger": 0.75}
    page = html_report(items, tmp_path / "r.html", "Report <1>", intro="a & b",
                       images={"figure": png}).read_text()
    assert page.count("data:image/png;base64,") == 1 + 3 + 1  # figure + 3 thumbnails + 1 spectrum
    assert "Report &lt;1&gt;" in page and "a &amp; b" in page and "0.7500" in page
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing external: one self-contained file
    assert all(i in page for i in ids)
