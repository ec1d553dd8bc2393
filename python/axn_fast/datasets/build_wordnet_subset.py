"""Choose the queries and items of a WordNet subset (the shipped one, or a bigger one).

    axn-fast build-subset                                        # writes into the package
    axn-fast build-subset --out-dir DIR --n-items 3000 --n-queries 300 --splits 150,50,100

(the command selects with :func:`select_subset`, then scores every pair with the named CE through
``build_score_matrix(strategy="all")``'s resumable checkpoint; ``--rescore`` keeps an existing
subset's texts and re-scores it). Needs Debian's ``wordnet-base`` (/usr/share/wordnet). Query selection: example
sentences of polysemous nouns (the gold synset shares a lemma with another
noun synset). Items: the gold synsets, then every synset sharing a lemma with
one (the confusers that make the task hard), then a random sample of the rest.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Set

import numpy as np

from axn_fast.datasets.subset import WordNetSubset
from axn_fast.datasets.wordnet import WordNetTask


def select_subset(task: WordNetTask, *, n_items: int, n_queries: int, split_sizes: Sequence[int], seed: int,
                  max_query_words: int = 24) -> WordNetSubset:
    """Choose queries and items from a :class:`WordNetTask` (no scores yet)."""
    rng = np.random.default_rng(seed)
    by_lemma: Dict[str, List[int]] = {}
    for i, lemmas in enumerate(task.item_lemmas):
        for lem in lemmas:
            by_lemma.setdefault(lem.lower(), []).append(i)

    def confusers(i: int) -> Set[int]:
        out = set()
        for lem in task.item_lemmas[i]:
            out.update(by_lemma[lem.lower()])
        out.discard(i)
        return out

    eligible = [r for r in range(len(task.queries))
                if confusers(int(task.gold[r])) and len(task.queries[r].split()) <= max_query_words]
    if len(eligible) < n_queries:
        raise ValueError(f"only {len(eligible)} eligible queries, asked for n_queries={n_queries}")
    rows = rng.choice(np.array(eligible), size=n_queries, replace=False)
    gold_syn = list(dict.fromkeys(int(task.gold[r]) for r in rows))
    if len(gold_syn) > n_items:
        raise ValueError(f"n_items={n_items} is smaller than the {len(gold_syn)} gold synsets")
    chosen = list(gold_syn)
    conf = sorted(set().union(*(confusers(g) for g in gold_syn)) - set(gold_syn))
    rng.shuffle(conf)
    room = n_items - len(chosen)
    chosen += conf[:room // 2 if len(conf) > room // 2 else len(conf)]  # at most half the items are confusers
    taken = set(chosen)
    rest = np.array([i for i in range(len(task.items)) if i not in taken])
    chosen += rng.choice(rest, size=n_items - len(chosen), replace=False).tolist()
    chosen_ids = np.array(chosen)[rng.permutation(n_items)]
    pos = {int(s): j for j, s in enumerate(chosen_ids)}
    perm = rng.permutation(n_queries)
    n_tr, n_dev, n_te = split_sizes
    if n_tr + n_dev + n_te != n_queries:
        raise ValueError(f"split sizes {split_sizes} must add up to n_queries={n_queries}")
    splits = {"train": np.sort(perm[:n_tr]), "dev": np.sort(perm[n_tr:n_tr + n_dev]),
              "test": np.sort(perm[n_tr + n_dev:])}
    return WordNetSubset(
        items=[task.items[i] for i in chosen_ids.tolist()],
        queries=[task.queries[r] for r in rows],
        gold=np.array([pos[int(task.gold[r])] for r in rows], dtype=np.int64),
        splits={k: v.astype(np.int64) for k, v in splits.items()},
        scores=None,
        ce_config={},
        item_offsets=task.item_offsets[chosen_ids].astype(np.int64),
        meta={"source": "WordNet 3.0 data.noun (Debian wordnet-base)", "seed": seed,
              "n_confusers": int(min(len(conf), room // 2))},
    ).validate()
