"""Retrieval on galclip embeddings: FAISS index directories, similarity search (also across
modalities), few-shot labeling and merger-candidate ranking.

Modules (the array-level functions need no model):

* :mod:`~galclip.retrieval.store` — index directory format, :func:`load_index` with checks.
* :mod:`~galclip.retrieval.build` — index construction by factory string, sharded on-disk IVF.
* :mod:`~galclip.retrieval.index` — ``galclip index``.
* :mod:`~galclip.retrieval.query`, :mod:`~galclip.retrieval.search` — ``galclip search``.
* :mod:`~galclip.retrieval.fewshot` — kNN / prototype few-shot classifiers, :func:`fewshot_curve`.
* :mod:`~galclip.retrieval.label` — ``galclip label``.
* :mod:`~galclip.retrieval.candidates` — ``galclip candidates``.

Shared with other stages: embeddings files (:mod:`galclip.embeddings`), galleries and HTML
reports (:mod:`galclip.gallery`), CSV/FITS result tables (:mod:`galclip.tables`).
"""
