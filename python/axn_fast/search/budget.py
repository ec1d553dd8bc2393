"""The budget of a search: how many CE calls in all, and how many per round."""
from __future__ import annotations

from typing import List, Tuple

from axn_fast._validation import check_int

__all__ = ["check_budget", "round_sizes"]


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
