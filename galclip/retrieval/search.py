"""``galclip search``: galaxies like this one — by object id, image file or spectrum file.

Outputs in ``out/``: ``neighbours.csv`` / ``neighbours.fits`` (query, rank, object_id, ra,
dec, score = cosine similarity), ``gallery.png`` (query + neighbours, image beside
spectrum) and ``report.html`` (self-contained).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.table import Table, vstack

from galclip.config import from_dict
from galclip.data.preprocess import ImagePrep, SpectrumPrep
from galclip.embeddings import QueryKind
from galclip.errors import ConfigError
from galclip.gallery import GalleryItem, gallery_png, html_report, items_from_dataset
from galclip.retrieval.query import (Query, load_checked_model, queries_from_spectrum_file, query_from_id,
                                     query_from_image_file)
from galclip.retrieval.store import LoadedIndex, load_index
from galclip.tables import write_table

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchConfig:
    """Options of ``galclip search`` (give exactly one of object_id, image_file, spectrum_file).

    Attributes:
        index: index directory from ``galclip index``.
        out: output directory.
        object_id: query with an object already in the index.
        query_kind: which stored embedding of that object to query with ("" = the index's
            kind; ``spectrum`` against an image index is a cross-modal query).
        image_file: FITS/JPEG/PNG cutout to query with (embedded by the image tower).
        spectrum_file: SDSS spec / DESI coadd / BOSS spPlate file (spectrum tower; one query
            per object in the file).
        k: neighbours per query.
        checkpoint: model for file queries ("" = the one recorded in the index manifest;
            its hash must match).
        image, spectrum: preprocessing for file queries when the index does not record it.
        formats: table formats to write.
        gallery: write ``gallery.png`` and ``report.html`` (needs the dataset for pixels).
        dataset: dataset for gallery pixels ("" = the one recorded in the manifest).
        mmap: memory-map the index instead of loading it into RAM.
        min_overlap: a query spectrum must cover this fraction of the model's wavelength grid
            (the rest is masked); objects below it are skipped with a warning.
    """

    index: str = ""
    out: str = "runs/search"
    object_id: str = ""
    query_kind: QueryKind = ""
    image_file: str = ""
    spectrum_file: str = ""
    k: int = 10
    checkpoint: str = ""
    image: ImagePrep = dataclasses.field(default_factory=ImagePrep)
    spectrum: SpectrumPrep = dataclasses.field(default_factory=SpectrumPrep)
    formats: list[str] = dataclasses.field(default_factory=lambda: ["csv", "fits"])
    gallery: bool = True
    dataset: str = ""
    mmap: bool = False
    min_overlap: float = 0.3


def neighbours(loaded: LoadedIndex, queries: Sequence[Query], k: int) -> Table:
    """Top-``k`` neighbours of each query as one table.

    A query object never finds itself in its own modality; across modalities it may (its
    own image is the right answer to "which image goes with this spectrum").
    """
    if not queries:
        return Table(names=("query", "rank", "object_id", "ra", "dec", "score"),
                     dtype=(str, int, str, float, float, float))
    vecs = np.stack([q.vector for q in queries])
    kind = loaded.manifest.embedding_kind
    scores, rows = loaded.search(vecs, k, exclude_rows=[q.row if q.kind == kind else -1 for q in queries])
    st = loaded.store
    tabs = []
    for q, s, r in zip(queries, scores, rows):
        ok = r >= 0
        r, s = r[ok], s[ok]
        tabs.append(Table({"query": [q.name] * len(r), "query_kind": [q.kind] * len(r),
                           "query_z": [q.z] * len(r), "query_coverage": [q.coverage] * len(r),
                           "rank": np.arange(1, len(r) + 1), "object_id": st.object_id[r].astype(str),
                           "ra": st.ra[r], "dec": st.dec[r], "score": s.astype(np.float64),
                           "has_image": st.has_image[r], "has_spectrum": st.has_spectrum[r]}))
    out = vstack(tabs)
    out.meta["IDXKIND"] = loaded.manifest.embedding_kind  # FITS keywords: <= 8 chars
    return out


def _prep(loaded: LoadedIndex, cfg: SearchConfig) -> tuple[ImagePrep, SpectrumPrep]:
    """Preprocessing recorded at index time (falls back to the search config's)."""
    pre = loaded.manifest.preprocess or {}
    img = from_dict(ImagePrep, pre["image"]) if "image" in pre else cfg.image
    spec = from_dict(SpectrumPrep, pre["spectrum"]) if "spectrum" in pre else cfg.spectrum
    return img, spec


def build_queries(loaded: LoadedIndex, cfg: SearchConfig) -> list[Query]:
    """Embed the query given in ``cfg`` (id, image file or spectrum file)."""
    given = [bool(cfg.object_id), bool(cfg.image_file), bool(cfg.spectrum_file)]
    if sum(given) != 1:
        raise ConfigError("give exactly one of object_id=..., image_file=..., spectrum_file=...")
    if cfg.object_id:
        return [query_from_id(loaded, cfg.object_id, cfg.query_kind)]
    model = load_checked_model(loaded, cfg.checkpoint)
    img_prep, spec_prep = _prep(loaded, cfg)
    kind = loaded.manifest.embedding_kind
    if cfg.image_file:
        info = loaded.manifest.preprocess or {}
        return [query_from_image_file(model, cfg.image_file, img_prep, info,
                                      "image_features" if kind == "image_features" else "image",
                                      loaded.store.meta.get("image_features_centre"))]
    if kind == "image_features":
        raise ConfigError(f"index {loaded.root} holds the image representation (kind=image_features), which "
                          "spectra do not share: search spectra in an index built with kind=joint or image")
    grid = loaded.store.spectrum_lambda
    if grid is None:
        raise ConfigError(f"index {loaded.root} has no wavelength grid stored (built without a spectroscopic "
                          "dataset); spectrum-file queries are not possible")
    return queries_from_spectrum_file(model, cfg.spectrum_file, grid, spec_prep, cfg.min_overlap)


def gallery_items(loaded: LoadedIndex, query: Query, table: Table, dataset: str = "") -> list[GalleryItem]:
    """Query + its neighbours as gallery items (pixels from the dataset when available)."""
    ds = dataset or loaded.manifest.dataset
    sub = table[table["query"] == query.name]
    ids = [str(v) for v in sub["object_id"]]
    if ds and Path(ds).exists():
        items = items_from_dataset(ds, ids, scores=list(sub["score"]), ranks=list(sub["rank"]))
        if query.row >= 0:
            q_item = items_from_dataset(ds, [query.name], ranks=[0])[0]
        else:
            q_item = GalleryItem(object_id=query.name, rank=0)
    else:
        if ds:
            log.warning("dataset %s not found: gallery without pixels", ds)
        items = [GalleryItem(object_id=i, score=float(s), rank=int(r)) for i, s, r in zip(ids, sub["score"], sub["rank"])]
        q_item = GalleryItem(object_id=query.name, rank=0)
    if query.image is not None:
        q_item.image = query.image
    if query.flux is not None:
        q_item.wave, q_item.flux, q_item.ivar = query.wave, query.flux, query.ivar
    q_item.ra, q_item.dec = query.ra, query.dec
    q_item.caption = f"{query.kind} query"
    return [q_item, *items]


def run_search(cfg: SearchConfig) -> Table:
    """CLI stage: embed the query, search, write tables, gallery and HTML report."""
    if not cfg.index:
        raise ConfigError("give index=... (a directory from `galclip index`)")
    loaded = load_index(cfg.index, mmap=cfg.mmap)
    queries = build_queries(loaded, cfg)
    table = neighbours(loaded, queries, cfg.k)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "neighbours", cfg.formats)
    if cfg.gallery:
        all_items: list[GalleryItem] = []
        for j, q in enumerate(queries):
            items = gallery_items(loaded, q, table, cfg.dataset)
            suffix = "" if len(queries) == 1 else f"-{j:03d}"
            gallery_png(items, out / f"gallery{suffix}.png",
                        title=f"{q.kind} query {q.name} → {loaded.manifest.embedding_kind} index ({cfg.k} nearest)")
            all_items.extend(items)
        html_report(all_items, out / "report.html", title=f"galclip search: {', '.join(q.name for q in queries)}",
                    intro=f"Nearest neighbours by cosine similarity in the galclip embedding space "
                          f"(index: {loaded.root}, {loaded.manifest.embedding_kind} embeddings, "
                          f"{loaded.manifest.count} objects, FAISS {loaded.manifest.factory}).")
    log.info("wrote %d neighbours for %d queries to %s", len(table), len(queries), out)
    return table

