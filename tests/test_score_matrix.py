"""axn_fast.build_score_matrix: pair selection, batching, checkpoints and resume."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from axn_fast import CrossEncoderError, DenseScoreCE, ScoreMatrix, ScoreMatrixInterrupted, build_score_matrix
from axn_fast.indexing.score_matrix import FINGERPRINT_PAIRS
from axn_fast.io.checkpoint import Checkpoint, CheckpointMismatch
from axn_fast.io.files import DirectoryBusyError

NQ, NI, D = 23, 50, 6


def _emb(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(NQ, D)).astype(np.float32), rng.normal(size=(NI, D)).astype(np.float32)


class FnCE:
    """A deterministic 'cross-encoder' on (int query, item id); records its calls."""

    def __init__(self, fail_after=None):
        self.calls = []
        self.fail_after = fail_after

    def __call__(self, q, ids):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("GPU fell off the bus")
        self.calls.append((q, np.array(ids)))
        return np.sin(7.0 * q + 0.13 * np.asarray(ids)).astype(np.float32)

    @property
    def pairs(self):
        return sum(len(i) for _, i in self.calls)


def _truth(q, i):
    return np.sin(7.0 * np.asarray(q) + 0.13 * np.asarray(i)).astype(np.float32)


def _same(a: ScoreMatrix, b: ScoreMatrix):
    assert a.shape == b.shape
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols) and np.array_equal(a.vals, b.vals)


def test_de_topk_picks_the_de_top_items_and_scores_them():
    Q, I = _emb()
    ce = FnCE()
    G = build_score_matrix(ce, list(range(NQ)), NI, strategy="de-topk", k_d=7, de_query_emb=Q,
                           de_item_emb=I, batch_size=3)
    assert G.nnz == NQ * 7 and G.shape == (NQ, NI)
    for q in range(NQ):
        want = np.sort(np.argsort(-(I @ Q[q]), kind="stable")[:7])
        assert np.array_equal(G.cols[G.rows == q], want)
    np.testing.assert_array_equal(G.vals, _truth(G.rows, G.cols))
    assert max(len(i) for _, i in ce.calls) == 3 and ce.pairs == G.nnz  # batched, nothing paid twice


def test_random_and_per_item_strategies():
    ce = FnCE()
    G = build_score_matrix(ce, list(range(NQ)), NI, strategy="random", k_d=9, seed=4)
    assert np.array_equal(np.bincount(G.rows, minlength=NQ), np.full(NQ, 9))
    assert len(set(zip(G.rows.tolist(), G.cols.tolist()))) == G.nnz  # distinct items per query
    again = build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="random", k_d=9, seed=4)
    other = build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="random", k_d=9, seed=5)
    _same(G, again)
    assert not np.array_equal(G.cols, other.cols)
    P = build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="per-item", k_d=3, seed=0)
    assert np.array_equal(np.bincount(P.cols, minlength=NI), np.full(NI, 3))
    np.testing.assert_array_equal(P.vals, _truth(P.rows, P.cols))
    Q, I = _emb()
    P2 = build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="per-item", k_d=2, de_query_emb=Q,
                            de_item_emb=I)
    for i in range(NI):  # the DE's top-2 queries of each item
        assert set(P2.rows[P2.cols == i]) == set(np.argsort(-(Q @ I[i]), kind="stable")[:2])


def test_failing_ce_keeps_partial_and_resume_equals_uninterrupted(tmp_path):
    Q, I = _emb()
    kw = dict(strategy="de-topk", k_d=8, de_query_emb=Q, de_item_emb=I, batch_size=3, shard_size=32,
              ce_id="sin")
    full = build_score_matrix(FnCE(), list(range(NQ)), NI, **kw)
    paid = 0
    for fail_after in (5, 11, 30):  # die three times at different points
        ce = FnCE(fail_after=fail_after)
        with pytest.raises(ScoreMatrixInterrupted, match="GPU fell off") as info:
            build_score_matrix(ce, list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
        paid += ce.pairs
        part = info.value.partial
        assert isinstance(part, ScoreMatrix) and part.nnz >= ce.pairs
        np.testing.assert_array_equal(part.vals, _truth(part.rows, part.cols))
    ce = FnCE()
    G = build_score_matrix(ce, list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
    paid += ce.pairs
    _same(G, full)
    assert paid == full.nnz  # a CE that raises is not paid: no pair scored twice
    ce = FnCE()
    _same(build_score_matrix(ce, list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw), full)
    assert ce.pairs == 0  # everything on disk


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from axn_fast import build_score_matrix
    log = open(sys.argv[2], "a")
    def ce(q, ids):
        time.sleep(0.004)
        log.write(f"{len(ids)}\\n"); log.flush()
        return np.sin(7.0 * q + 0.13 * np.asarray(ids)).astype(np.float32)
    build_score_matrix(ce, list(range(200)), 300, strategy="random", k_d=20, seed=3, batch_size=7,
                       shard_size=64, checkpoint_dir=sys.argv[1], ce_id="sin")
    log.write("done\\n")
""")


@pytest.mark.parametrize("kill_after", [15, 140, 390])
def test_sigkill_and_resume_equals_uninterrupted(tmp_path, kill_after):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    log, ckpt = tmp_path / "calls.log", tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(log)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            n = len(log.read_text().splitlines()) if log.exists() else 0
            if n >= kill_after or proc.poll() is not None:
                break
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    lines = log.read_text().splitlines()
    assert "done" not in lines and len(lines) >= kill_after
    paid_before = sum(int(x) for x in lines)
    ce = FnCE()
    G = build_score_matrix(ce, list(range(200)), 300, strategy="random", k_d=20, seed=3, batch_size=7,
                           shard_size=64, checkpoint_dir=ckpt, ce_id="sin")
    full = build_score_matrix(FnCE(), list(range(200)), 300, strategy="random", k_d=20, seed=3)
    _same(G, full)
    # never paid twice beyond the batch in flight when the child died
    assert paid_before + ce.pairs <= full.nnz + 7


def test_different_configuration_is_refused(tmp_path):
    Q, I = _emb()
    kw = dict(strategy="de-topk", de_query_emb=Q, de_item_emb=I)
    build_score_matrix(FnCE(), list(range(NQ)), NI, k_d=5, checkpoint_dir=tmp_path, **kw)
    with pytest.raises(ValueError, match=r"different configuration \(differs in: k_d"):
        build_score_matrix(FnCE(), list(range(NQ)), NI, k_d=6, checkpoint_dir=tmp_path, **kw)
    with pytest.raises(CheckpointMismatch, match="differs in: de_item_sha256"):
        build_score_matrix(FnCE(), list(range(NQ)), NI, k_d=5, checkpoint_dir=tmp_path,
                           strategy="de-topk", de_query_emb=Q, de_item_emb=I + 1)
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())
    assert manifest["config"]["k_d"] == 5 and len(manifest["config_sha256"]) == 64


def test_corrupt_shard_is_reported(tmp_path):
    build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="random", k_d=4, shard_size=20,
                       checkpoint_dir=tmp_path)
    shard = tmp_path / "shard-00001.bin"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x10  # same size, one bit flipped: the checksum catches it
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.bin.*delete it"):
        build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="random", k_d=4, shard_size=20,
                           checkpoint_dir=tmp_path)


def test_torn_journal_record_is_dropped(tmp_path):
    kw = dict(strategy="random", k_d=10, batch_size=2, shard_size=NQ * 10, ce_id="sin")
    with pytest.raises(ScoreMatrixInterrupted):
        build_score_matrix(FnCE(fail_after=6), list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
    journal = tmp_path / "shard-00000.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-3])  # the last record cut short, as by a kill mid-write
    ce = FnCE()
    G = build_score_matrix(ce, list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
    _same(G, build_score_matrix(FnCE(), list(range(NQ)), NI, **kw))
    assert ce.pairs == G.nnz - 5 * 2  # five intact records kept, the torn one re-scored


def test_bad_input():
    Q, I = _emb()
    qs = list(range(NQ))
    with pytest.raises(ValueError, match=r"k_d \(51\) must be <= n_items \(50\)"):
        build_score_matrix(FnCE(), qs, NI, strategy="random", k_d=51)
    with pytest.raises(ValueError, match=r"k_d \(24\) must be <= the number of queries"):
        build_score_matrix(FnCE(), qs, NI, strategy="per-item", k_d=24)
    with pytest.raises(ValueError, match="needs both de_query_emb and de_item_emb"):
        build_score_matrix(FnCE(), qs, NI, strategy="de-topk", k_d=3)
    with pytest.raises(ValueError, match="de_item_emb has 50 rows but n_items is 49"):
        build_score_matrix(FnCE(), qs, 49, k_d=3, de_query_emb=Q, de_item_emb=I)
    with pytest.raises(ValueError, match="same dimension"):
        build_score_matrix(FnCE(), qs, NI, k_d=3, de_query_emb=Q, de_item_emb=I[:, :4])
    with pytest.raises(ValueError, match="de_query_emb must be finite"):
        Qn = Q.copy()
        Qn[0, 0] = np.nan
        build_score_matrix(FnCE(), qs, NI, k_d=3, de_query_emb=Qn, de_item_emb=I)
    with pytest.raises(ValueError, match="strategy must be one of"):
        build_score_matrix(FnCE(), qs, NI, strategy="best", k_d=3)
    with pytest.raises(CrossEncoderError, match="non-finite scores"):
        build_score_matrix(lambda q, ids: np.full(len(ids), np.nan), qs, NI, strategy="random", k_d=3)
    with pytest.raises(CrossEncoderError, match=r"shape \(1,\), for 3 items"):
        build_score_matrix(lambda q, ids: np.zeros(1), qs, NI, strategy="random", k_d=3)
    with pytest.raises(TypeError, match="ce must be callable"):
        build_score_matrix(None, qs, NI, strategy="random", k_d=3)
    with pytest.raises(ValueError, match="rows must lie in"):
        ScoreMatrix([0, 5], [0, 1], [1.0, 2.0], (5, 5))
    with pytest.raises(TypeError, match="cols must hold integer ids"):
        ScoreMatrix([0, 1], [0.5, 1.0], [1.0, 2.0], (5, 5))
    with pytest.raises(ValueError, match="1-D of one length"):
        ScoreMatrix([0, 1], [0], [1.0, 2.0], (5, 5))


# ---------------------------------------------------------------------------- resume guarantees
def test_changing_batch_size_between_resumes_re_pays_nothing(tmp_path):
    # one shard, 800 pairs: batch 16 dies on call 8, then batch 20 dies twice, then batch 20 finishes
    kw = dict(strategy="random", k_d=20, seed=1, shard_size=10_000, ce_id="sin", checkpoint_dir=tmp_path)
    qs = list(range(40))
    paid = 0
    for batch, fail_after in ((16, 7), (20, 9), (20, 13)):
        ce = FnCE(fail_after=fail_after)
        with pytest.raises(ScoreMatrixInterrupted):
            build_score_matrix(ce, qs, NI, batch_size=batch, **kw)
        paid += ce.pairs
    ce = FnCE()
    G = build_score_matrix(ce, qs, NI, batch_size=20, **kw)
    paid += ce.pairs
    assert G.nnz == 800 and paid == 800  # the old offset-keyed journal re-paid 136 of them
    assert G.info["pairs_resumed"] == 800 - ce.pairs
    _same(G, build_score_matrix(FnCE(), qs, NI, strategy="random", k_d=20, seed=1))


def test_resume_without_ce_id_pays_only_the_fingerprint_pairs(tmp_path):
    kw = dict(strategy="random", k_d=10, batch_size=4, checkpoint_dir=tmp_path)
    ce = FnCE(fail_after=9)
    with pytest.raises(ScoreMatrixInterrupted):
        build_score_matrix(ce, list(range(NQ)), NI, **kw)
    first = ce.pairs
    ce = FnCE()
    G = build_score_matrix(ce, list(range(NQ)), NI, **kw)
    assert first + ce.pairs == G.nnz + FINGERPRINT_PAIRS
    doc = json.loads((tmp_path / "checkpoint.json").read_text())
    assert len(doc["identity"]["fingerprint"]) == FINGERPRINT_PAIRS


def test_a_different_cross_encoder_is_refused_on_resume(tmp_path):
    S1 = np.random.default_rng(0).normal(size=(NQ, NI)).astype(np.float32)
    S2 = S1.copy()
    S2[:, :] += 0.5  # same type, same shape, other scores
    kw = dict(strategy="random", k_d=10, batch_size=5)
    with pytest.raises(ScoreMatrixInterrupted):
        build_score_matrix(FnCE(fail_after=3), list(range(NQ)), NI, checkpoint_dir=tmp_path / "fn", **kw)
    with pytest.raises(CheckpointMismatch, match="another cross-encoder"):  # same call signature, other scores
        build_score_matrix(lambda q, ids: np.cos(np.asarray(ids, np.float32)), list(range(NQ)), NI,
                           checkpoint_dir=tmp_path / "fn", **kw)
    build_score_matrix(DenseScoreCE(S1), list(range(NQ)), NI, checkpoint_dir=tmp_path / "d", **kw)
    with pytest.raises(CheckpointMismatch, match="another cross-encoder"):
        build_score_matrix(DenseScoreCE(S2), list(range(NQ)), NI, checkpoint_dir=tmp_path / "d", **kw)
    G = build_score_matrix(DenseScoreCE(S1), list(range(NQ)), NI, checkpoint_dir=tmp_path / "d", **kw)
    np.testing.assert_array_equal(G.vals, S1[G.rows, G.cols])
    build_score_matrix(FnCE(), list(range(NQ)), NI, checkpoint_dir=tmp_path / "id", ce_id="model-a", **kw)
    with pytest.raises(CheckpointMismatch, match="'model-a'.*'model-b'"):
        build_score_matrix(FnCE(), list(range(NQ)), NI, checkpoint_dir=tmp_path / "id", ce_id="model-b", **kw)
    with pytest.raises(CheckpointMismatch, match="fingerprint"):
        build_score_matrix(FnCE(), list(range(NQ)), NI, checkpoint_dir=tmp_path / "d", ce_id="x", **kw)


def test_concurrent_job_on_one_directory_fails_clearly(tmp_path):
    kw = dict(strategy="random", k_d=5, ce_id="sin")
    config_holder = Checkpoint(tmp_path, kind="other", config={}, n_units=1).open()  # another job holds the lock
    try:
        ce = FnCE()
        with pytest.raises(DirectoryBusyError, match=f"in use by another job \\(process {os.getpid()}"):
            build_score_matrix(ce, list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
        assert ce.pairs == 0
    finally:
        config_holder.close()


def test_stale_tmp_files_and_journals_are_cleaned(tmp_path):
    kw = dict(strategy="random", k_d=10, batch_size=5, shard_size=50, ce_id="sin")
    with pytest.raises(ScoreMatrixInterrupted):
        build_score_matrix(FnCE(fail_after=25), list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
    assert (tmp_path / "shard-00001.bin").exists() and (tmp_path / "shard-00002.journal").exists()
    (tmp_path / ".shard-00003.bin.tmp-99999").write_bytes(b"half a shard")  # a writer killed mid-rename
    (tmp_path / "shard-00001.journal").write_bytes(b"")  # journal of a finished shard (kill before unlink)
    ce = FnCE()
    build_score_matrix(ce, list(range(NQ)), NI, checkpoint_dir=tmp_path, **kw)
    assert ce.pairs == NQ * 10 - 25 * 5
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if "tmp" in n or n.endswith(".journal")]
    assert len([n for n in names if n.endswith(".bin")]) == 5


def test_checkpoint_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="checkpoint_dir .* is not a directory"):
        build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="random", k_d=2, checkpoint_dir=tmp_path / "f")


@pytest.mark.parametrize("bad, match", [
    (lambda q, ids: np.full(len(ids), np.nan), "non-finite"),
    (lambda q, ids: np.zeros(len(ids) + 1), "for 5 items"),
    (lambda q, ids: np.full(len(ids), 3e39), "beyond float32"),
])
def test_bad_ce_output_keeps_what_was_scored(tmp_path, bad, match):
    calls = []

    def ce(q, ids):
        calls.append(q)
        return _truth(q, ids) if len(calls) <= 3 else bad(q, ids)

    with pytest.raises(CrossEncoderError, match=match) as info:
        build_score_matrix(ce, list(range(NQ)), NI, strategy="random", k_d=5, batch_size=5,
                           checkpoint_dir=tmp_path, ce_id="x")
    part = info.value.partial
    assert isinstance(part, ScoreMatrix) and part.nnz == 15
    np.testing.assert_array_equal(part.vals, _truth(part.rows, part.cols))
    G = build_score_matrix(FnCE(), list(range(NQ)), NI, strategy="random", k_d=5, batch_size=5,
                           checkpoint_dir=tmp_path, ce_id="x")
    assert G.info["pairs_resumed"] == 15


def test_keyboard_interrupt_carries_the_partial(tmp_path):
    n = [0]

    def ce(q, ids):
        n[0] += 1
        if n[0] == 4:
            raise KeyboardInterrupt
        return _truth(q, ids)

    with pytest.raises(KeyboardInterrupt) as info:
        build_score_matrix(ce, list(range(NQ)), NI, strategy="random", k_d=5, checkpoint_dir=tmp_path, ce_id="x")
    assert info.value.partial.nnz == 15


def test_the_ce_gets_a_read_only_copy_of_the_ids():
    def sorting_ce(q, ids):
        ids.sort()  # a CE that reorders its input in place
        return _truth(q, ids)

    G = build_score_matrix(lambda q, ids: _truth(q, np.array(ids)), list(range(NQ)), NI, strategy="random", k_d=5)
    with pytest.raises(ScoreMatrixInterrupted, match="read-only"):
        build_score_matrix(sorting_ce, list(range(NQ)), NI, strategy="random", k_d=5)
    np.testing.assert_array_equal(G.vals, _truth(G.rows, G.cols))


def test_strategy_all_is_the_dense_matrix_and_resumes(tmp_path):
    S = np.random.default_rng(2).normal(size=(NQ, NI)).astype(np.float32)
    ce = DenseScoreCE(S)
    calls = []

    def dying(q, ids):
        if len(calls) == 10:
            raise RuntimeError("preempted")
        calls.append(len(ids))
        return S[q, ids]

    with pytest.raises(ScoreMatrixInterrupted):
        build_score_matrix(dying, list(range(NQ)), NI, strategy="all", batch_size=16, checkpoint_dir=tmp_path,
                           ce_id="S")
    counted = FnCE()
    G = build_score_matrix(lambda q, ids: (counted.calls.append((q, ids)), S[q, ids])[1], list(range(NQ)), NI,
                           strategy="all", batch_size=7, checkpoint_dir=tmp_path, ce_id="S")
    assert sum(calls) + counted.pairs == NQ * NI  # resumed with another batch size, nothing paid twice
    assert G.nnz == NQ * NI and G.shape == (NQ, NI)
    np.testing.assert_array_equal(G.to_dense(), S)
    assert G.to_dense().dtype == np.float32
    G2 = build_score_matrix(ce, list(range(NQ)), NI, strategy="all", k_d=1, batch_size=NI)
    np.testing.assert_array_equal(G2.to_dense(), S)  # k_d is unused by "all"
