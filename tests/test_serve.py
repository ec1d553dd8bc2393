"""`axn-fast serve` against a real uvicorn server on 127.0.0.1, hit by concurrent httpx clients.

The server serves a small synthetic bundle saved to a temporary directory, with a
cheap cross-encoder (rows of a dense score matrix, optionally slowed down)
given through ``--ce-factory``, so answers can be compared with the library's.
"""
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import axn_fast  # noqa: E402
from axn_fast.indexing.bundle import IndexBundle  # noqa: E402
from axn_fast.search.adaptive import adaptive_search  # noqa: E402
from axn_fast.serve.batcher import DynamicBatcher, QueueFull  # noqa: E402

N_ITEMS, DIM, N_QUERIES = 400, 12, 40

FACTORY = '''
import os
import time

import numpy as np


class RowCE:
    """Query text "q<row>" -> that row of a dense score matrix; sleeps ``sleep`` s per call."""

    def __init__(self, S, sleep=0.0):
        self.S, self.sleep = S, sleep

    def __call__(self, q, ids):
        time.sleep(self.sleep)
        return self.S[int(q[1:]), ids]

    def score_batch(self, queries, ids_per_query):
        time.sleep(self.sleep)
        return [self.S[int(q[1:]), ids] for q, ids in zip(queries, ids_per_query)]


def make_ce(bundle):
    return RowCE(np.load(os.environ["AXN_TEST_SCORES"]), float(os.environ.get("AXN_TEST_CE_SLEEP", "0")))
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((N_QUERIES, DIM)).astype(np.float32)
    V = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    S = (Q @ V.T + 0.3 * rng.standard_normal((N_QUERIES, N_ITEMS))).astype(np.float32)
    np.save(root / "S.npy", S)
    (root / "axn_test_factory.py").write_text(FACTORY)
    items = [f"item number {i}" for i in range(N_ITEMS)]
    IndexBundle(axn_fast.Index(V), items=items).save(root / "bundle")
    return root, V, S, items


class Server:
    def __init__(self, root, *flags, sleep=0.0):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, AXN_TEST_SCORES=str(root / "S.npy"), AXN_TEST_CE_SLEEP=str(sleep),
                   PYTHONPATH=os.pathsep.join([str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
                   OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "axn_fast", "serve", str(root / "bundle"), "--port", str(self.port),
               "--ce-factory", "axn_test_factory:make_ce", "--log-level", "warning", *flags]
        self.log = root / f"server-{self.port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def fast_server(data):
    server = Server(data[0], "--max-batch", "8", "--max-wait-ms", "30", "--budget", "40", "--k", "5",
                    "--rounds", "4")
    yield server
    server.stop()


async def _post_all(url, bodies, timeout=30.0):
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await asyncio.gather(*(client.post(url + "/search", json=b) for b in bodies))


def _expected(data, query, budget, k, rounds):
    _, V, S, _ = data
    row = int(query[1:])
    return adaptive_search(axn_fast.Index(V), row, axn_fast.DenseScoreCE(S), budget, k=k, rounds=rounds, seed=0)


def _metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_concurrent_answers_equal_the_librarys_and_share_batches(fast_server, data):
    rng = np.random.default_rng(1)
    bodies = []
    for i in range(24):
        budget = int(rng.integers(10, 60))
        bodies.append({"query": f"q{i}", "budget": budget, "k": int(rng.integers(1, 10)),
                       "rounds": int(rng.integers(1, 6))})
    bodies.append({"query": "q30"})  # the server's defaults: --budget 40 --k 5 --rounds 4
    before = httpx.get(fast_server.url + "/metrics").text
    replies = asyncio.run(_post_all(fast_server.url, bodies))
    assert [r.status_code for r in replies] == [200] * len(bodies)
    items = data[3]
    for body, reply in zip(bodies, replies):
        got = reply.json()
        budget, k, rounds = body.get("budget", 40), body.get("k", 5), body.get("rounds", 4)
        want = _expected(data, body["query"], budget, k, rounds)
        assert got["ids"] == want.ids.tolist()
        assert got["scores"] == [float(s) for s in want.scores]  # exact CE scores, bit for bit
        assert got["items"] == [items[i] for i in want.ids]
        assert got["ce_calls"] == budget and (got["k"], got["budget"], got["rounds"]) == (k, budget, rounds)
        assert got["batch_size"] >= 1 and got["timings_ms"]["total"] > 0
    after = httpx.get(fast_server.url + "/metrics").text
    n_batches = _metric(after, "axn_batch_size_count") - _metric(before, "axn_batch_size_count")
    n_requests = _metric(after, "axn_batch_size_sum") - _metric(before, "axn_batch_size_sum")
    assert n_requests == len(bodies)
    assert n_batches < len(bodies)  # concurrent requests were gathered into shared batches
    assert max(r.json()["batch_size"] for r in replies) > 1
    assert _metric(after, "axn_ce_pairs_total") - _metric(before, "axn_ce_pairs_total") == \
        sum(b.get("budget", 40) for b in bodies)
    assert _metric(after, 'axn_requests_total{status="200"}') >= len(bodies)


@pytest.mark.parametrize("body, field", [
    ({}, "query"),
    ({"query": ""}, "query"),
    ({"query": "q1", "k": 0}, "k"),
    ({"query": "q1", "budget": "50"}, "budget"),
    ({"query": "q1", "rounds": 2.5}, "rounds"),
    ({"query": "q1", "budget": N_ITEMS + 1}, "budget"),
    ({"query": "q1", "budget": 10, "k": 11}, "k"),
    ({"query": "q1", "budget": 10, "rounds": 11}, "rounds"),
    ({"query": "q1", "timeout_ms": -1}, "timeout_ms"),
    ({"query": "q1", "topk": 3}, "topk"),
])
def test_bad_requests_get_422_naming_the_field(fast_server, body, field):
    reply = httpx.post(fast_server.url + "/search", json=body)
    assert reply.status_code == 422
    doc = reply.json()
    assert doc["error"].startswith(field + ":")
    assert doc["detail"][0]["loc"] == ["body", field]


def test_not_json_is_422(fast_server):
    reply = httpx.post(fast_server.url + "/search", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422


def test_health_and_metrics(fast_server):
    health = httpx.get(fast_server.url + "/health")
    assert health.status_code == 200
    doc = health.json()
    assert doc["status"] == "ok" and doc["n_items"] == N_ITEMS and doc["dim"] == DIM and doc["max_batch"] == 8
    metrics = httpx.get(fast_server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("axn_requests_total", "axn_request_seconds_bucket", "axn_batch_size_bucket", "axn_ce_pairs_total",
                 "axn_ce_seconds_total", "axn_queue_depth", "axn_ce_pairs_per_second"):
        assert name in metrics.text


def test_overload_gets_503_with_retry_after_and_nothing_else_breaks(data):
    # each batch takes >= 0.25 s; at most 2 run and 3 wait: the rest of 16 at once must be refused
    server = Server(data[0], "--max-batch", "2", "--max-queue", "3", "--max-wait-ms", "0", "--budget", "20",
                    "--rounds", "1", "--k", "3", sleep=0.25)
    try:
        bodies = [{"query": f"q{i}"} for i in range(16)]
        replies = asyncio.run(_post_all(server.url, bodies))
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(503) >= 1 and codes.count(200) >= 3
        for body, reply in zip(bodies, replies):
            if reply.status_code == 503:
                assert reply.headers["retry-after"] == "1" and "overloaded" in reply.json()["detail"]
            else:
                assert reply.json()["ids"] == _expected(data, body["query"], 20, 3, 1).ids.tolist()
        # the service is fine afterwards
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        reply = httpx.post(server.url + "/search", json={"query": "q5"}, timeout=30)
        assert reply.status_code == 200
        assert reply.json()["ids"] == _expected(data, "q5", 20, 3, 1).ids.tolist()
        # a deadline shorter than one batch: 504
        reply = httpx.post(server.url + "/search", json={"query": "q6", "timeout_ms": 50}, timeout=30)
        assert reply.status_code == 504

        # graceful shutdown: requests in flight or queued when SIGTERM arrives are all answered
        while httpx.get(server.url + "/health").json()["batch_running"]:  # the 504's batch still runs
            time.sleep(0.05)
        async def drain():
            async with httpx.AsyncClient(timeout=30) as client:
                # 3 = max_queue: all are taken even if they arrive before the worker picks any up
                tasks = [asyncio.create_task(client.post(server.url + "/search", json={"query": f"q{i}"}))
                         for i in range(20, 23)]
                await asyncio.sleep(0.15)
                server.proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks)

        replies = asyncio.run(drain())
        assert [r.status_code for r in replies] == [200] * 3
        for i, reply in zip(range(20, 23), replies):
            assert reply.json()["ids"] == _expected(data, f"q{i}", 20, 3, 1).ids.tolist()
        # uvicorn re-raises the signal once it has shut down, so the exit status is SIGTERM's
        assert server.proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        server.stop()


def test_batcher_gathers_and_bounds_its_queue():
    seen = []

    def fn(items):
        seen.append(list(items))
        time.sleep(0.05)
        return [x * 10 for x in items]

    async def main():
        batcher = DynamicBatcher(fn, max_batch=4, max_wait_ms=50, max_queue=6)
        out = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
        refused = 0
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(12)]
        done = await asyncio.gather(*tasks, return_exceptions=True)
        refused = sum(isinstance(d, QueueFull) for d in done)
        await batcher.close()
        return out, done, refused

    out, done, refused = asyncio.run(main())
    assert [o.result for o in out] == [0, 10, 20, 30, 40, 50]
    assert [len(b) for b in seen[:2]] == [4, 2]  # the first 4 gathered in one call
    assert refused == 6  # 6 queued at once (the worker had not started a batch), the other 6 refused
    assert [d.result for d in done if not isinstance(d, Exception)] == [i * 10 for i in range(6)]


def test_create_app_in_process_mounted_in_another_app_and_a_failing_ce(data):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from axn_fast.serve import create_app

    _, V, S, items = data
    fail = {"now": False}

    def ce(q, ids):
        if fail["now"]:
            raise ConnectionError("CE server went away")
        return S[int(q[1:]), ids]

    app = create_app(axn_fast.Index(V), ce, items=items, max_batch=4, max_wait_ms=1, default_budget=30,
                     default_k=3, default_rounds=3)
    closed = []

    @contextlib.asynccontextmanager
    async def lifespan(_):  # a mounted app's lifespan does not run: the host drains it
        yield
        await app.state.batcher.close()
        closed.append(True)

    parent = FastAPI(lifespan=lifespan)
    parent.mount("/axn", app)
    with TestClient(parent) as client:
        reply = client.post("/axn/search", json={"query": "q2"})
        assert reply.status_code == 200
        assert reply.json()["ids"] == _expected(data, "q2", 30, 3, 3).ids.tolist()
        fail["now"] = True
        reply = client.post("/axn/search", json={"query": "q3"})
        assert reply.status_code == 500 and "ConnectionError" in reply.json()["detail"]
        fail["now"] = False
        assert client.post("/axn/search", json={"query": "q3"}).status_code == 200  # still serving
        assert 'axn_requests_total{status="500"} 1.0' in client.get("/axn/metrics").text
    assert closed == [True] and app.state.batcher.closing
    with pytest.raises(TypeError, match="ce is required"):
        create_app(axn_fast.Index(V))
