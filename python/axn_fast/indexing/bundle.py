"""A saved search: an :class:`~axn_fast.Index` plus everything needed to run AXN on new queries.

:class:`IndexBundle` holds

- ``index``: the item vectors (an :class:`~axn_fast.Index`);
- ``de_model``: the dual-encoder that embeds a new query ("minilm" for the
  bundled all-MiniLM-L6-v2, or a checkpoint directory), or None;
- ``query_encoder``: an :class:`~axn_fast.indexing.inductive.InductiveMF` applied
  to the DE's query embedding (MF_IND), or None (the DE embedding is ``u0``);
- ``normalization``: the :class:`~axn_fast.ScoreNormalization` AXN applies to CE
  scores before fitting, or None;
- ``items``: the item texts (what the CE reads), or None;
- ``ce``: the cross-encoder's configuration, keyword arguments of
  :func:`axn_fast.encoders.models.load_cross_encoder` (``name``, or ``model``
  and ``head``; ``max_length``), or None;
- ``metadata``: free JSON.

On disk (``save``/``load``), a directory::

    manifest.json              format, version, the fields above as JSON, size + SHA-256 of every file
    index/                     Index.save's directory (vectors.npy + its own manifest)
    items.json                 the item texts (a JSON list of strings)
    query_encoder.safetensors  MF_IND weights

Saving checks everything first, writes into a temporary sibling directory and
renames it into place. Loading reads nothing outside the directory (fixed
names, symlinks refused), hashes the small files always (manifest, items,
encoder) and the vectors as ``verify`` says, checks sizes and declared shapes
before allocating, and never runs code (JSON, ``.npy``, safetensors).
Directories written by ``axn-fast index`` of axn_fast 0.1 (an index with
``items.txt``) are opened too.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from axn_fast.encoders.models import load_cross_encoder
from axn_fast.indexing.factorize import factorize
from axn_fast.indexing.inductive import InductiveMF
from axn_fast.indexing.normalization import normalization_from_score_matrix
from axn_fast.indexing.score_matrix import build_score_matrix
from axn_fast.io.checkpoint import digest_texts
from axn_fast.io.files import UnsafePathError, atomic_write_json, confined, read_json
from axn_fast.io.manifest import MANIFEST, check_file, file_entry, read_manifest
from axn_fast.io.persistence import (IndexFileError, Verify, check_verify, prepare_directory, publish_directory,
                                     staging_directory, versions)
from axn_fast.search.index import Index
from axn_fast.search.normalization import ScoreNormalization, as_normalization

FORMAT = "axn_fast.bundle"
FORMAT_VERSION = 1
INDEX_DIR = "index"
ITEMS = "items.json"
ENCODER = "query_encoder.safetensors"
#: keys of the ``ce`` configuration (keyword arguments of ``load_cross_encoder``)
CE_KEYS = ("name", "model", "head", "max_length")
_ITEMS_MAX_BYTES = 1 << 31

PathArg = Union[str, Path]


def _json_dict(value: Any, name: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        out = json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable: {exc}") from exc
    assert isinstance(out, dict)
    return out


def check_ce_config(ce: Any) -> Optional[Dict[str, Any]]:
    """Validate a CE configuration: a dict with keys among :data:`CE_KEYS` (``name`` or ``model``)."""
    if ce is None:
        return None
    ce = _json_dict(ce, "ce")
    unknown = sorted(set(ce) - set(CE_KEYS))
    if unknown:
        raise ValueError(f"ce has unknown keys {unknown}; allowed: {list(CE_KEYS)}")
    if "name" not in ce and "model" not in ce:
        raise ValueError("ce must name the cross-encoder: give 'name' (see NAMED_CES) or 'model' and 'head'")
    for k in ("name", "model", "head"):
        if k in ce and not isinstance(ce[k], str):
            raise TypeError(f"ce[{k!r}] must be a string, got {type(ce[k]).__name__}")
    if "max_length" in ce and (isinstance(ce["max_length"], bool) or not isinstance(ce["max_length"], int)
                               or ce["max_length"] < 1):
        raise ValueError(f"ce['max_length'] must be an integer >= 1, got {ce['max_length']!r}")
    return ce


@dataclass
class IndexBundle:
    """An :class:`~axn_fast.Index` and what a saved search needs (see the module docstring)."""

    index: Index
    de_model: Optional[str] = None
    query_encoder: Optional[InductiveMF] = None
    normalization: Optional[ScoreNormalization] = None
    items: Optional[List[str]] = None
    ce: Optional[Dict[str, Any]] = None
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (types, sizes, JSON-ability); raises TypeError/ValueError naming the field."""
        if not isinstance(self.index, Index):
            raise TypeError(f"index must be an axn_fast.Index, got {type(self.index).__name__}")
        if self.de_model is not None and (not isinstance(self.de_model, str) or not self.de_model):
            raise TypeError(f"de_model must be a non-empty string, got {self.de_model!r}")
        if self.query_encoder is not None:
            if not isinstance(self.query_encoder, InductiveMF):
                raise TypeError(f"query_encoder must be an InductiveMF, got {type(self.query_encoder).__name__}")
            if self.query_encoder.dim != self.index.dim:
                raise ValueError(f"query_encoder has dim {self.query_encoder.dim} but the index has dim "
                                 f"{self.index.dim}")
        self.normalization = as_normalization(self.normalization)
        items: Any = self.items
        if items is not None:
            if isinstance(items, (str, bytes)) or not all(isinstance(t, str) for t in items):
                raise TypeError("items must be a list of strings")
            self.items = list(items)
            if len(self.items) != self.index.n_items:
                raise ValueError(f"items has {len(self.items)} texts but the index has {self.index.n_items} items")
        self.ce = check_ce_config(self.ce)
        self.metadata = _json_dict(self.metadata, "metadata")

    # ------------------------------------------------------------------ use
    def embed_queries(self, de_query_emb: Any) -> np.ndarray:
        """``u0`` for AXN from DE query embeddings (n, d) or (d,): MF_IND's output when the bundle has
        one, else the DE embeddings themselves (float32)."""
        X = np.asarray(de_query_emb, dtype=np.float32)
        if X.shape[-1] != self.index.dim:
            raise ValueError(f"de_query_emb must have {self.index.dim} columns, got shape {X.shape}")
        return self.query_encoder.embed_queries(X) if self.query_encoder is not None else X

    def load_cross_encoder(self, **kwargs: Any) -> Any:
        """The bundle's cross-encoder over its items, built by
        :func:`~axn_fast.encoders.models.load_cross_encoder` (``kwargs``: device, batch_size, ...)."""
        if self.ce is None or self.items is None:
            raise ValueError("this bundle records no cross-encoder configuration and item texts; build the CE "
                             "yourself")
        return load_cross_encoder(self.items, **{**self.ce, **kwargs})

    # ------------------------------------------------------------------ files
    def save(self, path: PathArg, *, overwrite: bool = False) -> Path:
        """Write the bundle to the directory ``path`` (absent or empty, unless ``overwrite``); returns it."""
        self.validate()
        path = prepare_directory(path, overwrite=overwrite)
        tmp = staging_directory(path)
        try:
            self.index.save(tmp / INDEX_DIR)
            files: Dict[str, Any] = {f"{INDEX_DIR}/{MANIFEST}": file_entry(tmp / INDEX_DIR / MANIFEST)}
            if self.items is not None:
                atomic_write_json(tmp / ITEMS, self.items)
                files[ITEMS] = file_entry(tmp / ITEMS)
            if self.query_encoder is not None:
                self.query_encoder.save(tmp / ENCODER)
                files[ENCODER] = file_entry(tmp / ENCODER)
            norm = self.normalization
            doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_items": self.index.n_items,
                   "dim": self.index.dim, "de_model": self.de_model,
                   "query_encoder": None if self.query_encoder is None else "inductive_mf",
                   "normalization": None if norm is None else norm.to_dict(), "ce": self.ce,
                   "metadata": self.metadata, "versions": versions(), "files": files}
            atomic_write_json(tmp / MANIFEST, doc)
            publish_directory(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: PathArg, *, mmap: bool = True, verify: Verify = "cheap", num_threads: int = 0,
             load_query_encoder: bool = True) -> "IndexBundle":
        """Open a bundle written by :meth:`save` (or an ``axn-fast index`` directory of axn_fast 0.1).

        mmap, verify, num_threads : as in :meth:`axn_fast.Index.load` (the manifest,
            items and query encoder are always hashed).
        load_query_encoder : False skips the MF_IND weights (no torch needed).

        Raises FileNotFoundError for a missing directory and
        :class:`~axn_fast.io.persistence.IndexFileError` for anything missing,
        modified, unsafe or inconsistent.
        """
        mode = check_verify(verify)
        root = Path(path)
        if root.is_dir() and not (root / MANIFEST).is_symlink() and (root / MANIFEST).is_file():
            try:
                fmt = read_json(root / MANIFEST, max_bytes=16 << 20, what="manifest")
            except ValueError as exc:
                raise IndexFileError(str(exc)) from None
            if isinstance(fmt, dict) and fmt.get("format") == "axn_fast.index" and fmt.get("format_version") == 1:
                return _load_v01(root, fmt, mmap=mmap, verify=mode, num_threads=num_threads,
                                 load_query_encoder=load_query_encoder)
        doc = read_manifest(root, fmt=FORMAT, versions=(FORMAT_VERSION,), error=IndexFileError,
                            what="saved index bundle")
        files = doc.get("files")
        if not isinstance(files, dict):
            raise IndexFileError(f"the manifest in {str(root)!r} has no 'files' mapping")
        unknown = sorted(set(files) - {f"{INDEX_DIR}/{MANIFEST}", ITEMS, ENCODER})
        if unknown:
            raise IndexFileError(f"the manifest in {str(root)!r} lists unexpected files {unknown}")
        check_file(root, f"{INDEX_DIR}/{MANIFEST}", files.get(f"{INDEX_DIR}/{MANIFEST}"), hash=True,
                   error=IndexFileError)
        try:
            index_dir = confined(root, INDEX_DIR)
        except UnsafePathError as exc:
            raise IndexFileError(str(exc)) from None
        index = Index.load(index_dir, mmap=mmap, verify=mode, num_threads=num_threads)
        items = None
        if ITEMS in files:
            p = check_file(root, ITEMS, files[ITEMS], hash=True, error=IndexFileError)
            items = _read_items(p, index.n_items)
        encoder = None
        if ENCODER in files and load_query_encoder:
            p = check_file(root, ENCODER, files[ENCODER], hash=True, error=IndexFileError)
            try:
                encoder = InductiveMF.load(p)
            except ImportError as exc:
                raise ImportError(f"{str(root)!r} carries an MF_IND query encoder, which needs torch and "
                                  "safetensors (pip install 'axn_fast[ce]'); or pass load_query_encoder=False") from exc
            except ValueError as exc:
                raise IndexFileError(str(exc)) from None
        try:
            return cls(index, de_model=doc.get("de_model"), query_encoder=encoder,
                       normalization=_normalization(doc.get("normalization")), items=items, ce=doc.get("ce"),
                       metadata=doc.get("metadata") or {})
        except (TypeError, ValueError) as exc:
            raise IndexFileError(f"the bundle in {str(root)!r} is inconsistent: {exc}") from None


def _normalization(doc: Any) -> Optional[ScoreNormalization]:
    if doc is None:
        return None
    if not isinstance(doc, dict) or set(doc) != {"alpha", "beta"}:
        raise IndexFileError(f"invalid normalization {doc!r} (wants alpha and beta)")
    try:
        return ScoreNormalization(doc["alpha"], doc["beta"])
    except (TypeError, ValueError) as exc:
        raise IndexFileError(f"invalid normalization {doc!r}: {exc}") from None


def _read_items(path: Path, n_items: int) -> List[str]:
    try:
        items = read_json(path, max_bytes=_ITEMS_MAX_BYTES, max_depth=2, what="items file")
    except ValueError as exc:
        raise IndexFileError(str(exc)) from None
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise IndexFileError(f"{str(path)!r} must hold a JSON list of strings")
    if len(items) != n_items:
        raise IndexFileError(f"{str(path)!r} holds {len(items)} items but the index has {n_items}")
    return items


def _load_v01(root: Path, doc: Dict[str, Any], *, mmap: bool, verify: str, num_threads: int,
              load_query_encoder: bool) -> IndexBundle:
    """An ``axn-fast index`` directory of axn_fast 0.1: index files, ``items.txt`` and CE metadata."""
    index = Index.load(root, mmap=mmap, verify=verify, num_threads=num_threads)
    raw_files = doc.get("files")
    files: Dict[str, Any] = raw_files if isinstance(raw_files, dict) else {}
    meta = index.metadata
    encoder = None
    if ENCODER in files and load_query_encoder:
        p = check_file(root, ENCODER, files[ENCODER], hash=True, error=IndexFileError)
        try:
            encoder = InductiveMF.load(p)
        except ValueError as exc:
            raise IndexFileError(str(exc)) from None
    items = None
    if meta.get("created_by") == "axn-fast index":
        # the 0.1 manifest named the items file; only the name it always used is accepted
        if meta.get("items_file") != "items.txt":
            raise IndexFileError(f"{str(root)!r} names an items file {meta.get('items_file')!r}; only "
                                 "'items.txt' inside the directory is read")
        try:
            p = confined(root, "items.txt")
        except UnsafePathError as exc:
            raise IndexFileError(str(exc)) from None
        if p.is_symlink() or not p.is_file():
            raise IndexFileError(f"{str(p)!r} is missing or not a regular file")
        if p.stat().st_size > _ITEMS_MAX_BYTES:
            raise IndexFileError(f"{str(p)!r} is too large")
        try:
            lines = [t.strip() for t in p.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise IndexFileError(f"{str(p)!r} is not UTF-8 text: {exc}") from None
        items = [t for t in lines if t]
        h = hashlib.sha1()
        for t in items:
            h.update(t.encode("utf-8") + b"\n")
        if h.hexdigest() != meta.get("items_sha1"):
            raise IndexFileError(f"{str(p)!r} does not match the index (edited after indexing?)")
    ce = None
    ce_meta = meta.get("ce")
    if isinstance(ce_meta, dict) and meta.get("ce_model"):
        model = "minilm" if meta["ce_model"] == "bundled-minilm" else str(meta["ce_model"])
        ce = {"model": model, "head": str(ce_meta.get("head", "emb-dot"))}
        if isinstance(ce_meta.get("max_length"), int):
            ce["max_length"] = ce_meta["max_length"]
    de = meta.get("de_model")
    de_model = None if not de else ("minilm" if de == "bundled-minilm" else str(de))
    norm = _normalization(doc.get("normalization"))
    try:
        return IndexBundle(index, de_model=de_model, query_encoder=encoder, normalization=norm,
                           items=items, ce=ce, metadata=dict(meta))
    except (TypeError, ValueError) as exc:
        raise IndexFileError(f"the index in {str(root)!r} is inconsistent: {exc}") from None


# ---------------------------------------------------------------------------- building one
METHODS = ("ind", "trns", "de")
_DEFAULTS = {"ind": (20, 0.005), "trns": (30, 0.02)}


def build_index_bundle(items: Sequence[str], queries: Sequence[str], *, de: Any, de_model: str, ce: Any,
                       ce_config: Dict[str, Any], ce_identity: Optional[Dict[str, Any]] = None,
                       method: str = "ind", strategy: str = "de-topk", k_d: int = 100,
                       epochs: Optional[int] = None, lr: Optional[float] = None, reg: float = 0.01,
                       normalize: bool = True, dtype: str = "float32", checkpoint_dir: Optional[PathArg] = None,
                       batch_size: int = 64, seed: int = 0, num_threads: int = 0,
                       show_progress_bar: Optional[bool] = None,
                       log: Callable[[str], None] = lambda msg: None) -> IndexBundle:
    """The offline pipeline of the AXN paper, from texts to a saved-search bundle.

    1. embed items and train queries with the dual-encoder ``de`` (``de.encode(texts) -> (n, d)``);
    2. score the pairs chosen by ``strategy``/``k_d`` with the cross-encoder ``ce`` into G
       (:func:`build_score_matrix`, resumable in ``checkpoint_dir``; the checkpoint's CE id
       is ``ce_config``, ``ce_identity`` and a digest of the item texts: ``ce_identity`` is what
       tells apart two CEs that ``ce_config`` names alike, e.g. a trained delta retrained under the
       same name; see :func:`~axn_fast.encoders.models.ce_identity`);
    3. with ``normalize``, estimate the CE -> DE score normalisation and apply it to G;
    4. fit the item embeddings: ``method`` "ind" (MF_IND, :class:`InductiveMF`, which also
       becomes the bundle's query encoder), "trns" (MF_TRNS, :func:`factorize` from the DE
       embeddings) or "de" (the DE's embeddings as they are);
    5. return an :class:`IndexBundle` (not yet saved) whose ``ce`` is ``ce_config``.

    epochs / lr default to 20 / 0.005 for "ind" and 30 / 0.02 for "trns".
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ce_config = check_ce_config(ce_config) or {}
    if ce_identity is not None and not isinstance(ce_identity, dict):
        raise TypeError(f"ce_identity must be a dict (see axn_fast.encoders.models.ce_identity) or None, "
                        f"got {type(ce_identity).__name__}")
    items, queries = list(items), list(queries)
    if not items or not queries:
        raise ValueError("items and queries must each hold at least one text")
    log(f"embedding {len(items)} items and {len(queries)} train queries")
    I = np.asarray(de.encode(items), dtype=np.float32)
    Q = np.asarray(de.encode(queries), dtype=np.float32)
    log(f"scoring {k_d} pairs per {'item' if strategy == 'per-item' else 'query'} with the cross-encoder"
        + (f" (checkpoint in {str(checkpoint_dir)!r})" if checkpoint_dir is not None else ""))
    ce_id = json.dumps({**ce_config, **({} if ce_identity is None else {"identity": ce_identity}),
                        "items_sha256": digest_texts(items)}, sort_keys=True)
    G = build_score_matrix(ce, queries, len(items), strategy=strategy, k_d=k_d, de_query_emb=Q, de_item_emb=I,
                           seed=seed, batch_size=batch_size, checkpoint_dir=checkpoint_dir, ce_id=ce_id,
                           num_threads=num_threads, show_progress_bar=show_progress_bar)
    norm = None
    if normalize:
        norm = normalization_from_score_matrix(G, Q, I, n_queries=100, seed=seed)
        G = norm.apply(G)
        log(f"score normalisation: alpha={norm.alpha:.4g}, beta={norm.beta:.4g}")
    encoder = None
    fit: Dict[str, Any] = {"method": method}
    if method == "de":
        V = I
    else:
        d_epochs, d_lr = _DEFAULTS[method]
        epochs = d_epochs if epochs is None else epochs
        lr = d_lr if lr is None else lr
        if method == "ind":
            encoder = InductiveMF(Q.shape[1], seed=seed)
            encoder.fit(G, Q, I, epochs=epochs, lr=lr, seed=seed, show_progress_bar=show_progress_bar)
            V = encoder.embed_items(I)
            fit.update(epochs=epochs, lr=lr, train_rmse=encoder.history.train_rmse[-1])
        else:
            _, V, hist = factorize(G, U0=Q, V0=I, epochs=epochs, lr=lr, reg=reg, seed=seed,
                                   num_threads=num_threads, show_progress_bar=show_progress_bar)
            fit.update(epochs=epochs, lr=lr, reg=reg, train_rmse=hist.train_rmse[-1])
    index = Index(V, dtype=dtype, num_threads=num_threads)
    metadata = {"created_by": "axn-fast index", "n_train_queries": len(queries), "strategy": strategy,
                "k_d": int(G.info.get("k_d", k_d)), "g_nnz": G.nnz, "seed": seed, "fit": fit}
    return IndexBundle(index, de_model=de_model, query_encoder=encoder, normalization=norm, items=items,
                       ce=ce_config, metadata=metadata)
