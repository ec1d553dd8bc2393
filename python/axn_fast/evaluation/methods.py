"""The method factory: the evaluator's methods, by key, built from an :class:`EvalData`.

Keys (:data:`METHODS`): ``rnr-de``, ``rnr-tfidf``, ``rnr-bm25`` (retrieve-and-rerank from
the DE, TF-IDF or BM25), ``anncur-ref``, ``anncur`` (ANNCUR, reference and improved),
``adacur``, ``tour-ce``, ``tour-mse`` (learning rate chosen on dev from the TOUR paper's grid,
``LR_GRID``, when there is a dev split), ``axn`` (λ = 0) and ``axn-dev`` (λ chosen on dev).
First rounds come from the DE when there are DE embeddings (else from TF-IDF).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from axn_fast._validation import check_float, check_int
from axn_fast.evaluation.data import EvalData
from axn_fast.evaluation.index_cost import de_dstl_methods, distilled_embeddings
from axn_fast.indexing.normalization import estimate_normalization
from axn_fast.methods import baselines as B
from axn_fast.methods.tour import LR_GRID
from axn_fast.search.normalization import ScoreNormalization
from axn_fast.search.index import Index

METHODS = ("rnr-de", "rnr-tfidf", "rnr-bm25", "anncur-ref", "anncur", "adacur", "tour-ce", "tour-mse",
           "axn", "axn-dev", "rnr-de-dstl", "axn-de-dstl")

_NEEDS_DE = ("rnr-de", "tour-ce", "tour-mse", "axn", "axn-dev")
_NEEDS_TEXT = ("rnr-tfidf", "rnr-bm25")
_NEEDS_DSTL = ("rnr-de-dstl", "axn-de-dstl")  # a distilled DE (MethodConfig.distilled_de) and the texts

#: Train queries whose scores estimate the CE -> DE normalisation (AXN paper, App. A.4).
NORMALIZATION_QUERIES = 100


@dataclass(frozen=True)
class MethodConfig:
    """How the methods are built: part of an evaluation run's identity (its checkpoint key).

    keys: method keys (None: every method the data allows); budgets: the CE budgets m;
    rounds: rounds of AXN, ADACUR and TOUR; lams: λ values tried on dev by ``axn-dev``;
    seed: ANNCUR anchors and random first rounds; normalize: map CE scores onto the
    DE's score distribution for AXN and TOUR.
    """

    keys: Optional[Tuple[str, ...]] = None
    budgets: Tuple[int, ...] = (50, 100, 200, 500)
    rounds: int = 5
    lams: Tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    seed: int = 0
    normalize: bool = True
    distilled_de: Optional[str] = None  # delta dir of distill_dual_encoder: RNR-DE_DSTL, AXN over DE_DSTL

    def __post_init__(self) -> None:
        if self.keys is not None:
            bad = [k for k in self.keys if k not in METHODS]
            if bad:
                raise ValueError(f"unknown method(s) {bad}; choose from {','.join(METHODS)}")
            if not self.keys:
                raise ValueError("keys must name at least one method (or be None for all)")
        if not self.budgets:
            raise ValueError("budgets must not be empty")
        for b in self.budgets:
            check_int(b, "budgets", minimum=1)
        check_int(self.rounds, "rounds", minimum=1)
        for lam in self.lams:
            check_float(lam, "lams", minimum=0.0, maximum=1.0)
        check_int(self.seed, "seed", minimum=0)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["keys"] = None if self.keys is None else list(self.keys)
        d["budgets"], d["lams"] = list(self.budgets), list(self.lams)
        return d


def missing_inputs(data: EvalData, key: str) -> Optional[str]:
    """What method ``key`` needs that ``data`` lacks ("DE embeddings" or "texts"), or None."""
    if key not in METHODS:
        raise ValueError(f"unknown method {key!r}; choose from {','.join(METHODS)}")
    if key in _NEEDS_DE and (data.item_emb is None or data.query_emb is None):
        return "DE embeddings (item and query embeddings)"
    if key in _NEEDS_TEXT + _NEEDS_DSTL and (data.items is None or data.queries is None):
        return "texts (items and queries)"
    return None


def build_methods(data: EvalData, config: MethodConfig) -> Tuple[List[B.Method], List[str]]:
    """The methods of ``config.keys`` on ``data``, and the keys skipped for missing inputs.

    With ``config.keys=None`` every method is tried and those whose inputs ``data`` lacks (DE
    embeddings, texts) are skipped; a method named explicitly whose inputs are missing raises
    ``ValueError`` naming what it needs.
    """
    m_max = max(config.budgets)
    if m_max > data.n_items:
        raise ValueError(f"budgets must be <= the number of items ({data.n_items}), got {m_max}")
    rows = np.unique(np.concatenate([data.test] + ([] if data.dev is None else [data.dev])))
    S_train = data.scores[data.train]
    explicit = config.keys is not None
    keys = list(METHODS) if config.keys is None else list(config.keys)
    if config.distilled_de is None and not explicit:
        keys = [k for k in keys if k not in _NEEDS_DSTL]

    def ranked_from(retrieve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        out = np.full((data.n_queries, m_max), -1, dtype=np.int64)
        out[rows] = retrieve(rows)
        return out

    de_ranked: Optional[np.ndarray] = None
    norm: Optional[ScoreNormalization] = None
    index: Optional[Index] = None
    item_emb, query_emb = data.item_emb, data.query_emb
    if item_emb is not None and query_emb is not None:
        if config.normalize:
            sample = data.train[:NORMALIZATION_QUERIES]
            norm = estimate_normalization(data.scores[sample].ravel(), (query_emb[sample] @ item_emb.T).ravel())
        idx = Index(item_emb)
        index = idx
        de_ranked = ranked_from(lambda r: idx.search(query_emb[r], m_max)[1])
    lex: Dict[str, np.ndarray] = {}
    items, qtexts = data.items, data.queries
    if items is not None and qtexts is not None and any(k in keys for k in _NEEDS_TEXT):
        from axn_fast.methods.lexical import BM25Retriever, TfidfRetriever

        if "rnr-tfidf" in keys:
            tf_class: Any = TfidfRetriever  # not annotated by its owner yet
            tf = tf_class(items)
            lex["rnr-tfidf"] = ranked_from(lambda r: tf.retrieve([qtexts[i] for i in r], m_max))
        if "rnr-bm25" in keys:
            bm = BM25Retriever(items)
            lex["rnr-bm25"] = ranked_from(lambda r: bm.retrieve([qtexts[i] for i in r], m_max))
    first = de_ranked if de_ranked is not None else lex.get("rnr-tfidf")

    methods: List[B.Method] = []
    skipped: List[str] = []
    dstl: Optional[List[B.Method]] = None
    for key in keys:
        missing = missing_inputs(data, key)
        if missing is not None:
            if explicit:
                raise ValueError(f"method {key!r} needs {missing}")
            skipped.append(key)
            continue
        if key in _NEEDS_DE:  # missing_inputs() said the embeddings are there
            if de_ranked is None or index is None or item_emb is None or query_emb is None:
                raise RuntimeError(f"method {key!r}: DE embeddings were not prepared")
            if key == "rnr-de":
                methods.append(B.RetrieveRerank("RNR (DE)", de_ranked))
            elif key in ("tour-ce", "tour-mse"):
                loss = "kl" if key == "tour-ce" else "mse"
                # the learning rate is chosen on dev like λ (TOUR paper); without dev, the paper's default
                methods.append(B.TOURMethod(item_emb, query_emb, loss=loss, rounds=config.rounds, init=de_ranked,
                                            normalization=norm,
                                            lrs=None if data.dev is None else LR_GRID[loss]))
            else:
                methods.append(B.AXNMethod(index, query_emb=query_emb, init=de_ranked, rounds=config.rounds,
                                           lams=(0.0,) if key == "axn" else config.lams, seed=config.seed,
                                           normalization=norm))
        elif key in _NEEDS_TEXT:
            methods.append(B.RetrieveRerank("RNR (TF-IDF)" if key == "rnr-tfidf" else "RNR (BM25)", lex[key]))
        elif key in ("anncur-ref", "anncur"):
            variant = "reference" if key == "anncur-ref" else "improved"
            methods.append(B.ANNCURMethod(S_train, variant=variant, seed=config.seed))
        elif key == "adacur":
            methods.append(B.ADACURMethod(S_train, init=first, rounds=config.rounds, seed=config.seed))
        elif key in _NEEDS_DSTL:
            if config.distilled_de is None:
                raise ValueError(f"method {key!r} needs a distilled DE "
                                 "(MethodConfig.distilled_de; axn-fast eval --distilled-de)")
            if dstl is None:  # both keys share one encoding of the texts
                dstl = de_dstl_methods(data, *distilled_embeddings(data, config.distilled_de), max_budget=m_max,
                                       rounds=config.rounds, seed=config.seed)
            methods.append(dstl[0] if key == "rnr-de-dstl" else dstl[1])
    return methods, skipped


def drop_untunable(methods: Sequence[B.Method], budgets: Sequence[int], have_dev: bool) -> Tuple[
        List[B.Method], List[B.Method]]:
    """Without dev queries, the methods that have settings to choose from cannot run:
    returns (kept, dropped)."""
    if have_dev:
        return list(methods), []
    dropped = [m for m in methods if any(len(m.grid(b)) > 1 for b in budgets)]
    return [m for m in methods if m not in dropped], dropped
