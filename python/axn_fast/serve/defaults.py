"""What ``axn-fast serve`` serves without an index: the shipped WordNet subset with the bundled MiniLM."""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np
from numpy.typing import NDArray

from axn_fast.datasets.subset import load_wordnet_subset
from axn_fast.evaluation.demo import demo_normalization
from axn_fast.indexing.bundle import IndexBundle
from axn_fast.integrations.ranker import QueryEmbedder
from axn_fast.search.index import Index

__all__ = ["wordnet_subset_bundle"]


def wordnet_subset_bundle(*, device: str = "auto") -> Tuple[IndexBundle, QueryEmbedder]:
    """An in-memory bundle over the shipped WordNet subset and its query embedder.

    Items are embedded by the bundled all-MiniLM-L6-v2 dual-encoder (which also
    embeds queries: ``u0``); the CE is the one that scored the subset
    (:meth:`WordNetSubset.ce_kwargs`: its name, e.g. the trained ``minilm-wordnet``), built by :func:`~axn_fast.encoders.models.load_cross_encoder`;
    the CE -> DE score normalisation is fitted on the subset's train queries and
    their shipped scores, as ``axn-fast demo`` does. Needs the ``demo`` extra.
    """
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import minilm_path

    ds = load_wordnet_subset()
    de_class: Any = HFDualEncoder  # not annotated by its owner yet
    de = de_class(minilm_path(), device=device, show_progress_bar=False)
    V = np.asarray(de.encode(ds.items, show_progress_bar=False), dtype=np.float32)
    norm = None
    if ds.scores is not None:
        train = ds.splits["train"]
        U = de.encode([ds.queries[r] for r in train], show_progress_bar=False)
        norm = demo_normalization(U, V, ds.scores[train])
    bundle = IndexBundle(Index(V), de_model="minilm", normalization=norm, items=list(ds.items), ce=ds.ce_kwargs(),
                         metadata={"source": "the WordNet subset shipped with axn_fast"})

    def embed(texts: List[str]) -> NDArray[np.float32]:
        return np.asarray(de.encode(texts, show_progress_bar=False), dtype=np.float32)
    return bundle, embed
