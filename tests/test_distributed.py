"""axn_fast.distributed on a local Ray cluster: G on an actor pool, ShardedIndex, the Serve deployment.

One Ray cluster (2 CPUs, no dashboard) serves the whole module and is shut
down at its end; everything is small so the module stays well under 2 minutes.
"""
import os
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
    assert len({pid for pid, _ in _calls(log)}) >= 1


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
    log, flag, ck = str(tmp_path / "calls.log"), str(tmp_path / "failed"), tmp_path / "ck"
    queries = list(range(NQ))
    kw = dict(strategy="all", batch_size=10, checkpoint_dir=ck, shard_size=50, num_cpus_per_worker=0.5)
    with pytest.raises(ScoreMatrixInterrupted, match="GPU fell off the bus") as info:
        build_score_matrix_ray(Factory(log, kill_at=12, flag=flag, fail="raise"), queries, NI, num_workers=1,
                               calls_per_task=1, **kw)
    part = info.value.partial
    assert 0 < part.nnz < NQ * NI
    assert np.array_equal(part.vals, _truth(part.rows, part.cols))
    assert any(name.endswith(".bin") for name in os.listdir(ck))  # finished shards committed
    before = _paid(log)
    G = build_score_matrix_ray(Factory(log), queries, NI, num_workers=2, **kw)
    assert np.array_equal(G.to_dense(), _truth(np.arange(NQ)[:, None], np.arange(NI)[None, :]))
    assert G.info["pairs_resumed"] == part.nnz
    # nothing scored before is paid again: the rest, plus the fingerprint pairs that check the CE (no ce_id)
    assert _paid(log) - before == G.info["pairs_scored"] == NQ * NI - part.nnz + FINGERPRINT_PAIRS


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
