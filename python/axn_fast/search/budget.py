"""The budget of a search: how many CE calls in all, how many per round, and which items round 1 takes."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import check_int

__all__ = ["check_budget", "round_sizes", "first_round", "random_ids", "unique_in_order"]


def round_sizes(budget: int, rounds: int) -> List[int]:
    """CE calls per round: ``budget // rounds`` each, the remainder spread over the last rounds."""
    base, rem = divmod(budget, rounds)
    return [base + (1 if r >= rounds - rem else 0) for r in range(rounds)]


def check_budget(budget: object, k: object, n_items: int, *, rounds: object = 1) -> Tuple[int, int]:
    """Validate ``budget`` (CE calls) and ``k`` (results wanted) for one search over ``n_items``.

    Returns ``(budget, k)`` as ints; raises TypeError/ValueError naming the argument.
    """
    budget = check_int(budget, "budget", minimum=1)
    k = check_int(k, "k", minimum=1)
    rounds = check_int(rounds, "rounds", minimum=1)
    if budget > n_items:
        raise ValueError(f"budget must be <= the number of items ({n_items}), got {budget}")
    if budget < rounds:
        raise ValueError(f"budget must be >= rounds (at least one CE call per round), "
                         f"got budget={budget} < rounds={rounds}")
    if k > budget:
        raise ValueError(f"k must be <= budget (the top-k is chosen among the budget items scored), "
                         f"got k={k} > budget={budget}")
    return budget, k


def first_round(size: int, init: Optional[NDArray[np.int64]], fill: Callable[[NDArray[np.int64], int], ArrayLike]
                ) -> NDArray[np.int64]:
    """The ``size`` items of a multi-round method's first round: what ``init`` means for every method.

    init : ranked candidate ids (a dual encoder's, BM25's, ...), best first, already
        validated; the first ``size`` distinct ones are taken, in order (duplicates
        are scored once). None: no candidates.
    fill : ``fill(chosen, need) -> need ids`` not in ``chosen``: the method's own
        first-round rule (AXN: top items by u0, else random; ADACUR: random; TOUR:
        top items by u0), used for all of round 1 without ``init`` and to top up an
        ``init`` with fewer than ``size`` distinct ids.
    Returns (size,) int64 ids.
    """
    chosen = unique_in_order(init)[:size] if init is not None else np.zeros(0, dtype=np.int64)
    need = size - len(chosen)
    if need == 0:
        return chosen
    extra = np.asarray(fill(chosen, need), dtype=np.int64)
    return np.concatenate([chosen, extra])


def unique_in_order(ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """``ids`` without repeats, first occurrences in their original order."""
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


def random_ids(n_items: int, need: int, exclude: NDArray[np.int64], seed: Optional[int]) -> NDArray[np.int64]:
    """``need`` distinct ids drawn uniformly from ``[0, n_items)`` minus ``exclude`` (with ``seed``).

    Small item sets draw from the explicit pool; large ones by rejection, without
    materialising a permutation of all items.
    """
    rng = np.random.default_rng(seed)
    mask = np.ones(n_items, dtype=bool)
    mask[exclude] = False
    if n_items <= 4 * (need + len(exclude)) + 1024:
        return rng.choice(np.flatnonzero(mask), size=need, replace=False).astype(np.int64)
    extra = np.zeros(0, dtype=np.int64)
    while len(extra) < need:
        draw = rng.integers(0, n_items, size=2 * need + 16)
        draw = unique_in_order(draw[mask[draw]])[: need - len(extra)]
        mask[draw] = False
        extra = np.concatenate([extra, draw])
    return extra
