"""The shipped WordNet subset: item/query texts, splits and the exact CE score matrix.

Two files under ``axn_fast/datasets/data/`` (regenerate them with
``axn-fast build-subset``):

- ``wordnet_subset.json.gz``: texts, gold ids, splits, WordNet offsets and the
  CE configuration the scores were made with;
- ``wordnet_subset_scores.npz``: ``scores``, (n_queries, n_items) float16, the
  exact CE score of every query against every item (read back as float32).

Neither is a pickle: JSON and an ``.npz`` read with ``allow_pickle=False``.
"""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
TEXTS_FILE = "wordnet_subset.json.gz"
SCORES_FILE = "wordnet_subset_scores.npz"
FORMAT_VERSION = 1


@dataclass
class WordNetSubset:
    """A WordNet noun linking task with its dense exact CE scores.

    items: (n_items,) texts "lemmas: definition"; queries: (n_queries,) example
    sentences; gold: (n_queries,) int64 gold item id of each query; splits:
    "train" / "dev" / "test" -> int64 query row ids; scores: (n_queries,
    n_items) float32 exact CE scores (None while being built); ce_config: how
    the scores were made; item_offsets: (n_items,) int64 WordNet synset offsets.
    """

    items: List[str]
    queries: List[str]
    gold: np.ndarray
    splits: Dict[str, np.ndarray]
    scores: Optional[np.ndarray]
    ce_config: Dict[str, Any]
    item_offsets: np.ndarray
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    def ce_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`~axn_fast.encoders.models.load_cross_encoder` that rebuild the CE
        whose scores the subset holds: by name when recorded (``axn-fast build-subset`` records it), else
        the bundled MiniLM with the recorded head (subsets scored before CEs had names)."""
        max_length = int(self.ce_config.get("max_length", 128))
        if "name" in self.ce_config:
            return {"name": str(self.ce_config["name"]), "max_length": max_length}
        return {"model": "minilm", "head": str(self.ce_config.get("head", "emb-cos")), "max_length": max_length}

    def validate(self) -> "WordNetSubset":
        """Check shapes and ranges; raises ValueError naming the inconsistent field."""
        nq, ni = len(self.queries), len(self.items)
        if self.gold.shape != (nq,) or (nq and (self.gold.min() < 0 or self.gold.max() >= ni)):
            raise ValueError(f"gold must be {nq} item ids in [0, {ni}), got shape {self.gold.shape}")
        if self.item_offsets.shape != (ni,):
            raise ValueError(f"item_offsets must have shape ({ni},), got {self.item_offsets.shape}")
        seen = np.concatenate([np.asarray(v) for v in self.splits.values()]) if self.splits else np.zeros(0)
        if set(self.splits) != {"train", "dev", "test"}:
            raise ValueError(f"splits must have keys train, dev, test; got {sorted(self.splits)}")
        if seen.size != np.unique(seen).size or (seen.size and (seen.min() < 0 or seen.max() >= nq)):
            raise ValueError("splits must be disjoint query row ids in [0, n_queries)")
        if self.scores is not None and self.scores.shape != (nq, ni):
            raise ValueError(f"scores must have shape ({nq}, {ni}), got {self.scores.shape}")
        return self


def save_subset(ds: WordNetSubset, out_dir: Union[str, "os.PathLike[str]"]) -> None:
    """Write the two files of ``ds`` into ``out_dir`` (scores stored as float16)."""
    ds.validate()
    if ds.scores is None:
        raise ValueError("save_subset needs the dense scores; compute them first")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "format_version": FORMAT_VERSION,
        "items": ds.items,
        "queries": ds.queries,
        "gold": ds.gold.tolist(),
        "splits": {k: np.asarray(v).tolist() for k, v in ds.splits.items()},
        "item_offsets": ds.item_offsets.tolist(),
        "ce_config": ds.ce_config,
        "meta": ds.meta,
    }
    # mtime=0 keeps the file byte-identical across rebuilds of the same content
    with gzip.GzipFile(out_dir / TEXTS_FILE, "wb", compresslevel=9, mtime=0) as f:
        f.write(json.dumps(doc, ensure_ascii=False, indent=0).encode("utf-8"))
    np.savez_compressed(out_dir / SCORES_FILE, scores=ds.scores.astype(np.float16))


def load_wordnet_subset(path: Union[str, "os.PathLike[str]", None] = None) -> WordNetSubset:
    """Load the shipped WordNet subset (or one written by the build command into ``path``).

    path: a directory holding ``wordnet_subset.json.gz`` and
    ``wordnet_subset_scores.npz``; default: the copy shipped inside the package.
    Needs no WordNet installation and no torch.
    """
    d = DATA_DIR if path is None else Path(path)
    texts, scores_file = d / TEXTS_FILE, d / SCORES_FILE
    for f in (texts, scores_file):
        if not f.is_file():
            raise FileNotFoundError(
                f"{str(f)!r} not found; rebuild the subset with "
                "`axn-fast build-subset --out-dir DIR`"
            )
    with gzip.open(texts, "rb") as gz:
        doc = json.loads(gz.read().decode("utf-8"))
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{str(texts)!r} has format_version {doc.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    with np.load(scores_file, allow_pickle=False) as z:
        scores = z["scores"].astype(np.float32)
    return WordNetSubset(
        items=list(doc["items"]),
        queries=list(doc["queries"]),
        gold=np.asarray(doc["gold"], dtype=np.int64),
        splits={k: np.asarray(v, dtype=np.int64) for k, v in doc["splits"].items()},
        scores=scores,
        ce_config=dict(doc["ce_config"]),
        item_offsets=np.asarray(doc["item_offsets"], dtype=np.int64),
        meta=dict(doc.get("meta", {})),
    ).validate()
