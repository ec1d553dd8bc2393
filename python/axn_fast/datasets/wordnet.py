"""WordNet 3.0 noun synsets as a word-sense "entity linking" task.

Items are noun synsets, written ``"lemma, lemma: definition"`` (the quoted
examples removed from the gloss). Queries are the example sentences quoted in
noun glosses; each query's gold item is the synset whose gloss holds it. This
mirrors ZESHEL (the papers' benchmark): a mention in context must be linked to
one of many entities, several of which share its surface form.

The data comes from Debian's ``wordnet-base`` package
(``/usr/share/wordnet/data.noun``), parsed here without any WordNet library.
File format: ``wndb(5WN)``: ``offset lex_filenum ss_type w_cnt word lex_id
[word lex_id...] p_cnt [ptr...] | gloss``, with ``w_cnt`` in hexadecimal.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

import numpy as np

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

_QUOTED = re.compile(r'"([^"]*)"')
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic markers (adjectives only; harmless here)


@dataclass(frozen=True)
class Synset:
    """One noun synset of ``data.noun``.

    offset: the byte offset WordNet uses as the synset's id; lemmas: its words
    (underscores turned into spaces); definition: the gloss without its quoted
    examples; examples: the quoted example sentences, in gloss order.
    """

    offset: int
    lemmas: Tuple[str, ...]
    definition: str
    examples: Tuple[str, ...]

    @property
    def text(self) -> str:
        """The item text: ``"lemma, lemma: definition"``."""
        return f"{', '.join(self.lemmas)}: {self.definition}"


def _split_gloss(gloss: str) -> Tuple[str, Tuple[str, ...]]:
    examples = tuple(e.strip() for e in _QUOTED.findall(gloss) if e.strip())
    first_quote = gloss.find('"')
    definition = gloss if first_quote < 0 else gloss[:first_quote]
    # the definition part ends with "; " (or stray punctuation) before the first example
    definition = definition.strip().rstrip(";").strip()
    return definition, examples


def parse_data_line(line: str) -> Optional[Synset]:
    """Parse one line of a WordNet ``data.*`` file; ``None`` for the licence header.

    Raises ValueError naming the problem when the line is malformed.
    """
    if not line.strip() or line.startswith(" "):  # the licence header lines start with two spaces
        return None
    head, sep, gloss = line.partition("|")
    if not sep:
        raise ValueError(f"WordNet data line has no '|' gloss separator: {line[:80]!r}")
    fields = head.split()
    if len(fields) < 6:
        raise ValueError(f"WordNet data line has too few fields: {line[:80]!r}")
    try:
        offset = int(fields[0])
        w_cnt = int(fields[3], 16)
    except ValueError as exc:
        raise ValueError(f"WordNet data line has a bad offset or word count: {line[:80]!r}") from exc
    words = fields[4:4 + 2 * w_cnt:2]
    if len(words) != w_cnt or w_cnt == 0:
        raise ValueError(f"WordNet data line declares {w_cnt} words but holds {len(words)}: {line[:80]!r}")
    lemmas = []
    for w in words:
        w = _ADJ_MARKER.sub("", w).replace("_", " ")
        if w not in lemmas:
            lemmas.append(w)
    definition, examples = _split_gloss(gloss)
    return Synset(offset, tuple(lemmas), definition, examples)


def read_synsets(path: Union[str, "os.PathLike[str]"]) -> List[Synset]:
    """All synsets of one WordNet ``data.*`` file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"WordNet data file {str(path)!r} not found; install Debian's 'wordnet-base' package "
            "(apt-get install wordnet-base) or pass the directory holding data.noun as wordnet_dir"
        )
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            syn = parse_data_line(line)
            if syn is not None:
                out.append(syn)
    return out


@dataclass
class WordNetTask:
    """The full noun task built from the Debian files (no scores).

    items: (n_items,) item texts; item_offsets: (n_items,) int64 WordNet offsets;
    queries: (n_queries,) example sentences; gold: (n_queries,) int64 item id of
    each query's synset. Examples that occur in more than one gloss are dropped
    (their gold would be ambiguous).
    """

    items: List[str]
    item_offsets: np.ndarray
    item_lemmas: List[Tuple[str, ...]]
    queries: List[str]
    gold: np.ndarray


def wordnet(wordnet_dir: Union[str, "os.PathLike[str]", None] = None) -> WordNetTask:
    """Build the WordNet noun linking task from ``wordnet_dir/data.noun``.

    wordnet_dir: the directory of the WordNet database (default
    ``/usr/share/wordnet``, Debian's ``wordnet-base``). Raises FileNotFoundError
    naming the package to install when the files are missing.
    """
    wordnet_dir = DEFAULT_WORDNET_DIR if wordnet_dir is None else Path(wordnet_dir)
    synsets = read_synsets(Path(wordnet_dir) / "data.noun")
    owners: Dict[str, Set[int]] = {}
    for i, syn in enumerate(synsets):
        for ex in syn.examples:
            owners.setdefault(ex, set()).add(i)
    queries, gold = [], []
    for i, syn in enumerate(synsets):
        for ex in dict.fromkeys(syn.examples):  # a gloss may quote the same example twice
            if len(owners[ex]) == 1:
                queries.append(ex)
                gold.append(i)
    return WordNetTask(
        items=[s.text for s in synsets],
        item_offsets=np.array([s.offset for s in synsets], dtype=np.int64),
        item_lemmas=[s.lemmas for s in synsets],
        queries=queries,
        gold=np.array(gold, dtype=np.int64),
    )


@dataclass
class CETrainingSplit:
    """WordNet nouns split for training a CE, disjoint from the shipped subset.

    items: (n_items,) every noun synset's text (ids index this list);
    item_offsets: (n_items,) int64 WordNet offsets; ``{train,dev,eval}_queries``
    with ``{train,dev,eval}_gold`` ((n,) int64 item ids). The split is by gold
    synset: no synset is the gold of queries in two parts, so the eval and dev
    queries' senses were never a training target. ``excluded``: how many
    queries were left out because of the shipped subset.
    """

    items: List[str]
    item_offsets: np.ndarray
    train_queries: List[str]
    train_gold: np.ndarray
    dev_queries: List[str]
    dev_gold: np.ndarray
    eval_queries: List[str]
    eval_gold: np.ndarray
    excluded: Dict[str, int]


def ce_training_split(task: Optional[WordNetTask] = None, *, exclude_queries: Iterable[str] = (),
                      exclude_offsets: Iterable[int] = (),
                      n_eval: int = 500, n_dev: int = 200, n_train: Optional[int] = None,
                      n_items: Optional[int] = None, seed: int = 0) -> CETrainingSplit:
    """Split the WordNet noun task into train / dev / eval queries for CE training.

    task: from :func:`wordnet` (built when None); exclude_queries: query texts
    never used (e.g. every query of the shipped subset); exclude_offsets:
    synset offsets whose example sentences are never used (e.g. the shipped
    subset's items). Gold synsets are shuffled with ``seed`` and taken whole
    into eval until it holds >= ``n_eval`` queries, then dev (>= ``n_dev``),
    then train (the first ``n_train`` queries of the shuffled rest, all when None).

    n_items: None keeps every noun synset as an item; otherwise the items are
    the gold synsets of every usable query, every synset sharing a lemma with
    one of them (the confusers that make the task hard), then random other
    synsets up to ``n_items`` (kept in WordNet order; gold ids refer to them).
    """
    task = wordnet() if task is None else task
    skip_q = set(exclude_queries)
    skip_off = {int(o) for o in exclude_offsets}
    gold_off = task.item_offsets[task.gold]
    keep = np.array([q not in skip_q and int(o) not in skip_off for q, o in zip(task.queries, gold_off.tolist())],
                    dtype=bool)
    by_gold: Dict[int, List[int]] = {}
    for r in np.flatnonzero(keep).tolist():
        by_gold.setdefault(int(task.gold[r]), []).append(r)
    rng = np.random.default_rng(seed)
    golds = np.array(sorted(by_gold), dtype=np.int64)
    golds = golds[rng.permutation(golds.shape[0])]
    parts: Dict[str, List[int]] = {"eval": [], "dev": [], "train": []}
    want = {"eval": n_eval, "dev": n_dev}
    for g in golds.tolist():
        part = "eval" if len(parts["eval"]) < want["eval"] else "dev" if len(parts["dev"]) < want["dev"] else "train"
        parts[part].extend(by_gold[g])
    if len(parts["eval"]) < n_eval or len(parts["dev"]) < n_dev:
        raise ValueError(f"only {int(keep.sum())} usable queries: cannot hold n_eval={n_eval} and n_dev={n_dev}")
    train = parts["train"]
    train = [train[i] for i in rng.permutation(len(train))]
    if n_train is not None:
        if n_train > len(train):
            raise ValueError(f"n_train={n_train} but only {len(train)} training queries are left")
        train = train[:n_train]

    def texts(rows: List[int]) -> Tuple[List[str], np.ndarray]:
        return [task.queries[r] for r in rows], task.gold[np.array(rows, dtype=np.int64)].astype(np.int64)

    tq, tg = texts(train)
    dq, dg = texts(parts["dev"])
    eq, eg = texts(parts["eval"])
    items, offsets = list(task.items), task.item_offsets
    if n_items is not None:
        by_lemma: Dict[str, List[int]] = {}
        for i, lemmas in enumerate(task.item_lemmas):
            for lem in lemmas:
                by_lemma.setdefault(lem.lower(), []).append(i)
        chosen = set(by_gold)
        for g in by_gold:
            for lem in task.item_lemmas[g]:
                chosen.update(by_lemma[lem.lower()])
        if len(chosen) > n_items:
            raise ValueError(f"n_items={n_items} is smaller than the {len(chosen)} gold and confuser synsets")
        rest = np.setdiff1d(np.arange(len(task.items)), np.fromiter(chosen, dtype=np.int64))
        fill = np.random.default_rng([seed, 1]).choice(rest, size=n_items - len(chosen), replace=False)
        keep_items = np.sort(np.concatenate([np.fromiter(chosen, dtype=np.int64), fill]))
        new_id = np.full(len(task.items), -1, dtype=np.int64)
        new_id[keep_items] = np.arange(keep_items.shape[0])
        items, offsets = [task.items[i] for i in keep_items.tolist()], task.item_offsets[keep_items]
        tg, dg, eg = new_id[tg], new_id[dg], new_id[eg]
    return CETrainingSplit(items=items, item_offsets=offsets, train_queries=tq, train_gold=tg,
                           dev_queries=dq, dev_gold=dg, eval_queries=eq, eval_gold=eg,
                           excluded={"queries": int((~keep).sum())})
