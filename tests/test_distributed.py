"""axn_fast.distributed on a local Ray cluster: G on an actor pool, ShardedIndex, the Serve deployment.

One Ray cluster (2 CPUs, no dashboard) serves the whole module and is shut
down at its end; everything is small so the module stays well under 2 minutes.
"""
import os
import re
import signal
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the distributed backends need the ray extra: pip install 'axn_fast[ray]'")
pytest.importorskip("ray.data", reason="build_score_matrix_ray needs ray[data]")

from axn_fast import ScoreMatrix, ScoreMatrixInterrupted, build_score_matrix  # noqa: E402
from axn_fast.errors import CrossEncoderError  # noqa: E402
from axn_fast.indexing.score_matrix import FINGERPRINT_PAIRS  # noqa: E402

NQ, NI, D = 9, 40, 5

pytestmark = [
    # ray.data's DataContext() sets its own deprecated fields (a ray bug, not our use)
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    # ray.serve's own pydantic models, at import (a ray matter, not our use)
    pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray.cloudpickle
    # the actors unpickle this module's test CEs by value: the workers cannot import tests/
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 << 20, log_to_driver=False,
             configure_logging=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        yield
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _truth(q, i):
    return np.sin(7.0 * np.asarray(q, dtype=np.float64) + 0.13 * np.asarray(i)).astype(np.float32)


class LoggedCE:
    """A deterministic CE over (int query, item id) that appends one line per call to a file shared by all
    actors ("pid n_pairs"); optionally SIGKILLs its own process once, at the kill_at-th call of the job,
    or raises / returns NaN there."""

    def __init__(self, log, kill_at=None, flag=None, fail="kill"):
        self.log, self.kill_at, self.flag, self.fail = log, kill_at, flag, fail

    def __call__(self, q, ids):
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {len(ids)}\n".encode())
        finally:
            os.close(fd)
        if self.kill_at is not None and _n_calls(self.log) >= self.kill_at:
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                if self.fail == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.fail == "raise":
                    raise RuntimeError("GPU fell off the bus")
                return np.full(len(ids), np.nan, dtype=np.float32)
        return _truth(q, ids)


class Factory:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __call__(self):
        return LoggedCE(*self.args, **self.kwargs)


def _calls(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def _n_calls(log):
    return len(_calls(log))


def _paid(log):
    return sum(n for _, n in _calls(log))


def _emb(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(NQ, D)).astype(np.float32), rng.normal(size=(NI, D)).astype(np.float32)


def _same(a: ScoreMatrix, b: ScoreMatrix):
    assert a.shape == b.shape
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols) and np.array_equal(a.vals, b.vals)


# ---------------------------------------------------------------------------- G on an actor pool
@pytest.mark.parametrize("strategy", ["de-topk", "per-item"])
def test_ray_g_equals_local_g_and_pays_each_pair_once(tmp_path, strategy):
    from axn_fast.distributed import build_score_matrix_ray
    Q, I = _emb()
    log = str(tmp_path / "calls.log")
    kw = dict(strategy=strategy, k_d=6 if strategy == "de-topk" else 3, de_query_emb=Q, de_item_emb=I,
              batch_size=4)
    local = build_score_matrix(LoggedCE(str(tmp_path / "local.log")), list(range(NQ)), NI, **kw)
    G = build_score_matrix_ray(Factory(log), list(range(NQ)), NI, num_workers=2, num_cpus_per_worker=0.5, **kw)
    _same(G, local)
    assert G.nnz == local.nnz > 0
    assert G.info["pairs_scored"] == _paid(log) == local.nnz
    assert max(n for _, n in _calls(log)) <= 4


def test_killed_actor_is_replaced_and_nothing_is_lost_or_paid_twice_beyond_its_task(tmp_path):
    from axn_fast.distributed import build_score_matrix_ray
    log, flag = str(tmp_path / "calls.log"), str(tmp_path / "killed")
    queries = list(range(NQ))
    batch, per_task = 3, 2
    G = build_score_matrix_ray(Factory(log, kill_at=7, flag=flag), queries, NI, strategy="random", k_d=8,
                               batch_size=batch, checkpoint_dir=tmp_path / "ck", ce_id="logged",
                               num_workers=2, num_cpus_per_worker=0.5, calls_per_task=per_task)
    assert os.path.exists(flag), "no actor was killed"
    local = build_score_matrix(LoggedCE(str(tmp_path / "local.log")), queries, NI, strategy="random", k_d=8)
    _same(G, local)
    pids = {pid for pid, _ in _calls(log)}
    assert len(pids) >= 2  # the killed actor's process was replaced
    # what the kill cost: at most the calls of the killed task
    assert local.nnz <= _paid(log) <= local.nnz + per_task * batch
    # the Ray checkpoint is the local format: a local resume pays nothing and returns the same G
    again = build_score_matrix(LoggedCE(str(tmp_path / "resume.log")), queries, NI, strategy="random", k_d=8,
                               checkpoint_dir=tmp_path / "ck", ce_id="logged")
    _same(again, G)
    assert again.info["pairs_scored"] == 0 and _paid(str(tmp_path / "resume.log")) == 0


def test_interrupted_ray_job_resumes_from_its_shards_paying_only_the_rest(tmp_path):
    from axn_fast.distributed import build_score_matrix_ray
    # one log per run: the first run's pool may still finish a call after the failure it reported
    log, log2 = str(tmp_path / "calls.log"), str(tmp_path / "calls2.log")
    flag, ck = str(tmp_path / "failed"), tmp_path / "ck"
    queries = list(range(NQ))
    kw = dict(strategy="all", batch_size=10, checkpoint_dir=ck, shard_size=50, num_cpus_per_worker=0.5)
    with pytest.raises(ScoreMatrixInterrupted, match="GPU fell off the bus") as info:
        build_score_matrix_ray(Factory(log, kill_at=12, flag=flag, fail="raise"), queries, NI, num_workers=1,
                               calls_per_task=1, **kw)
    part = info.value.partial
    assert 0 < part.nnz < NQ * NI
    assert np.array_equal(part.vals, _truth(part.rows, part.cols))
    assert any(name.endswith(".bin") for name in os.listdir(ck))  # finished shards committed
    G = build_score_matrix_ray(Factory(log2), queries, NI, num_workers=2, **kw)
    assert np.array_equal(G.to_dense(), _truth(np.arange(NQ)[:, None], np.arange(NI)[None, :]))
    assert G.info["pairs_resumed"] == part.nnz
    # nothing scored before is paid again: the rest, plus the fingerprint pairs that check the CE (no ce_id)
    assert _paid(log2) == G.info["pairs_scored"] == NQ * NI - part.nnz + FINGERPRINT_PAIRS


def test_unusable_scores_from_an_actor_are_a_cross_encoder_error_with_partial(tmp_path):
    from axn_fast.distributed import build_score_matrix_ray
    log, flag = str(tmp_path / "calls.log"), str(tmp_path / "nan")
    with pytest.raises(CrossEncoderError, match="query row") as info:
        build_score_matrix_ray(Factory(log, kill_at=3, flag=flag, fail="nan"), list(range(NQ)), NI,
                               strategy="random", k_d=5, batch_size=5, num_workers=1, num_cpus_per_worker=0.5,
                               calls_per_task=1)
    assert info.value.partial is not None and info.value.partial.nnz <= 10


def test_bad_arguments_fail_before_any_work():
    from axn_fast.distributed import build_score_matrix_ray
    with pytest.raises(TypeError, match="ce_factory"):
        build_score_matrix_ray(None, [0], 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_workers"):
        build_score_matrix_ray(Factory("x"), [0], 3, strategy="all", num_workers=0)
    with pytest.raises(ValueError, match="num_gpus_per_worker"):
        build_score_matrix_ray(Factory("x"), [0], 3, strategy="all", num_gpus_per_worker=-1)
    with pytest.raises(ValueError, match="de_query_emb"):
        build_score_matrix_ray(Factory("x"), [0], 3, k_d=2)


# ---------------------------------------------------------------------------- ShardedIndex
N_ITEMS, DIM = 61, 4


@pytest.fixture(scope="module")
def tied_vectors():
    # few distinct rows, repeated all over: many exact score ties, also across the shard boundaries
    rng = np.random.default_rng(3)
    distinct = rng.integers(-3, 4, size=(6, DIM)).astype(np.float32)
    return distinct[rng.integers(0, 6, size=N_ITEMS)]


@pytest.fixture(scope="module")
def sharded(tied_vectors):
    from axn_fast.distributed import ShardedIndex
    index = ShardedIndex.from_arrays(tied_vectors, 3, num_threads=1, actor_options={"num_cpus": 0})
    yield index
    index.shutdown()


def _same_search(a, b):
    assert a[0].dtype == b[0].dtype == np.float32 and a[1].dtype == b[1].dtype == np.int64
    assert a[0].shape == b[0].shape
    assert np.array_equal(a[1], b[1])
    assert np.array_equal(a[0], b[0])


@pytest.mark.parametrize("k", [0, 1, 7, 25, N_ITEMS, N_ITEMS + 5])
def test_sharded_search_equals_one_index_with_ties_across_shards(sharded, tied_vectors, k):
    from axn_fast import Index
    index = Index(tied_vectors, num_threads=1)
    rng = np.random.default_rng(k)
    U = rng.integers(-2, 3, size=(5, DIM)).astype(np.float32)
    assert sharded.bounds == (0, 20, 41, 61)
    _, ids_all = index.search(U, N_ITEMS)
    scores_all = index.search(U, N_ITEMS)[0]
    assert (np.diff(scores_all, axis=1) == 0).sum() > 50  # the data has ties, the test can fail
    _same_search(sharded.search(U, k), index.search(U, k))
    _same_search(sharded.search(U[2], k), index.search(U[2], k))
    common = np.array([0, 19, 20, 21, 40, 41, 60, 20])
    _same_search(sharded.search(U, k, exclude=common), index.search(U, k, exclude=common))
    per_query = [rng.choice(N_ITEMS, size=s, replace=False) for s in (0, 3, 30, 60, 61)]
    _same_search(sharded.search(U, k, exclude=per_query), index.search(U, k, exclude=per_query))


def test_sharded_search_ranks_non_finite_scores_like_index(sharded, tied_vectors):
    from axn_fast import Index
    index = Index(tied_vectors, num_threads=1)
    big = np.full((3, DIM), 3e38, dtype=np.float32)
    big[1] *= -1
    big[2, :2] *= -1  # inf - inf: NaN scores
    _same_search(sharded.search(big, 30), index.search(big, 30))


def test_sharded_vectors_of_and_protocol(sharded, tied_vectors):
    from axn_fast.search.protocol import VectorIndex
    assert isinstance(sharded, VectorIndex)
    assert (sharded.n_items, sharded.dim, len(sharded)) == (N_ITEMS, DIM, N_ITEMS)
    ids = np.array([60, 0, 20, 19, 41, 41, 5])
    rows = sharded.vectors_of(ids)
    assert rows.dtype == np.float32 and rows.flags.c_contiguous
    assert np.array_equal(rows, tied_vectors[ids])
    assert sharded.vectors_of([]).shape == (0, DIM)


def test_sharded_bad_input_fails_like_index(sharded, tied_vectors):
    from axn_fast import Index
    index = Index(tied_vectors)
    U = np.zeros((2, DIM), np.float32)
    for U_, k_, kw in ((np.zeros(DIM + 1), 3, {}), (U, -1, {}), (U, 3, {"exclude": [[1], [2], [3]]}),
                       (U, 3, {"exclude": [N_ITEMS]})):
        with pytest.raises((ValueError, TypeError)) as want:
            index.search(U_, k_, **kw)
        with pytest.raises(type(want.value), match=re.escape(str(want.value))):
            sharded.search(U_, k_, **kw)
    with pytest.raises(ValueError, match="outside"):
        sharded.vectors_of([N_ITEMS])


def test_adaptive_search_runs_unchanged_on_a_sharded_index(sharded, tied_vectors):
    from axn_fast import Index
    from axn_fast.search.adaptive import adaptive_search
    from axn_fast.search.batch import adaptive_search_batch
    rng = np.random.default_rng(0)
    V = tied_vectors + rng.normal(scale=0.01, size=tied_vectors.shape).astype(np.float32)
    index = Index(V, num_threads=1)
    from axn_fast.distributed import ShardedIndex
    with ShardedIndex.from_arrays(V, 4, num_threads=1, actor_options={"num_cpus": 0}) as sh:
        def ce(q, ids):
            return (V[ids] @ rng_q[q] + 0.1 * np.cos(ids)).astype(np.float32)
        rng_q = rng.normal(size=(3, DIM)).astype(np.float32)
        for q in range(3):
            a = adaptive_search(index, q, ce, 24, k=5, rounds=4, seed=q)
            b = adaptive_search(sh, q, ce, 24, k=5, rounds=4, seed=q)
            assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
            assert np.array_equal(a.u, b.u)
        batch_a = adaptive_search_batch(index, [0, 1, 2], ce, 24, k=5, rounds=4, u0=rng_q)
        batch_b = adaptive_search_batch(sh, [0, 1, 2], ce, 24, k=5, rounds=4, u0=rng_q)
        for a, b in zip(batch_a, batch_b):
            assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)


def test_sharded_index_saved_and_memory_mapped(sharded, tied_vectors, tmp_path):
    from axn_fast import Index
    from axn_fast.distributed import ShardedIndex
    sharded.save(tmp_path / "sh")
    assert sorted(p.name for p in (tmp_path / "sh").iterdir()) == [
        "shard-00000", "shard-00001", "shard-00002", "sharded_index.json"]
    with ShardedIndex.load(tmp_path / "sh", num_threads=1, actor_options={"num_cpus": 0}) as loaded:
        assert loaded.bounds == sharded.bounds
        U = np.random.default_rng(1).normal(size=(4, DIM)).astype(np.float32)
        _same_search(loaded.search(U, 9, exclude=[3, 30]), Index(tied_vectors).search(U, 9, exclude=[3, 30]))
        assert np.array_equal(loaded.vectors_of(np.arange(N_ITEMS)), tied_vectors)


# ---------------------------------------------------------------------------- Ray Serve
class TextCE:
    """A deterministic CE over query texts: items scored by V @ (an embedding drawn from the text's bytes)."""

    def __init__(self, V):
        self.V = np.asarray(V, dtype=np.float32)

    def __call__(self, query, ids):
        rng = np.random.default_rng(list(str(query).encode()))
        u = rng.normal(size=self.V.shape[1]).astype(np.float32)
        return (self.V[ids] @ u + 0.05 * np.sin(np.asarray(ids, dtype=np.float64))).astype(np.float32)


class TextCEFactory:
    def __init__(self, V):
        self.V = V

    def __call__(self):
        return TextCE(self.V)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_deployment_batches_requests_and_answers_like_adaptive_search(tied_vectors):
    import json
    import urllib.error
    import urllib.request

    from ray import serve

    from axn_fast.distributed import ShardedIndex
    from axn_fast.distributed.deployment import axn_deployment
    from axn_fast.search.adaptive import adaptive_search
    V = tied_vectors + np.random.default_rng(5).normal(scale=0.01, size=tied_vectors.shape).astype(np.float32)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        with ShardedIndex.from_arrays(V, 2, num_threads=1, actor_options={"num_cpus": 0}) as sh:
            app = axn_deployment(sh, TextCEFactory(V), k=5, budget=20, rounds=4, seed=1, max_batch_size=8,
                                 batch_wait_timeout_s=0.5, ray_actor_options={"num_cpus": 0})
            handle = serve.run(app, name="axn", route_prefix="/axn")
            queries = [f"query {i}" for i in range(6)]
            responses = [handle.search.remote(q) for q in queries]
            answers = [r.result(timeout_s=60) for r in responses]
            ce = TextCE(V)
            for q, got in zip(queries, answers):
                want = adaptive_search(sh, q, ce, 20, k=5, rounds=4, seed=1)
                assert got["ids"] == want.ids.tolist() and got["n_ce_calls"] == 20
                assert np.array_equal(np.float32(got["scores"]), want.scores)
            assert max(a["batch_size"] for a in answers) > 1  # @serve.batch gathered concurrent requests

            def post(body):
                req = urllib.request.Request(f"http://127.0.0.1:{port}/axn", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        return resp.status, json.loads(resp.read())
                except urllib.error.HTTPError as exc:
                    return exc.code, json.loads(exc.read())

            status, body = post({"query": "query 3", "k": 3})
            want = adaptive_search(sh, "query 3", ce, 20, k=3, rounds=4, seed=1)
            assert status == 200 and body["ids"] == want.ids.tolist()
            status, body = post({"query": "query 3", "budget": N_ITEMS + 1})
            assert status == 422 and "budget" in body["error"]
            status, body = post({"query": "query 3", "colour": "red"})
            assert status == 422 and "colour" in body["error"]
    finally:
        serve.shutdown()


def test_open_index_opens_saved_indexes_and_refuses_other_objects(sharded, tied_vectors, tmp_path):
    from axn_fast import Index
    from axn_fast.distributed import ShardedIndex
    from axn_fast.distributed.deployment import open_index
    Index(tied_vectors).save(tmp_path / "one")
    sharded.save(tmp_path / "many")
    one = open_index(str(tmp_path / "one"), num_threads=1)
    many = open_index(tmp_path / "many", num_threads=1, shard_actor_options={"num_cpus": 0})
    try:
        assert type(one) is Index and isinstance(many, ShardedIndex) and many.bounds == sharded.bounds
        U = np.ones((2, DIM), np.float32)
        _same_search(many.search(U, 11), one.search(U, 11))
        assert open_index(sharded) is sharded
        with pytest.raises(TypeError, match="VectorIndex"):
            open_index(np.zeros((3, DIM)))  # type: ignore[arg-type]
    finally:
        many.shutdown()
