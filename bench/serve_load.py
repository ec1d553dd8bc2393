"""Load test of `axn-fast serve`: throughput and p50/p99 latency, batching on vs max_batch=1.

Starts `axn-fast serve` on 127.0.0.1 over a synthetic bundle (unit-norm item
embeddings) with a simulated cross-encoder given through ``--ce-factory``: each
CE call costs ``CALL_MS`` ms plus ``PAIR_US`` us per pair (a GPU forward pass
has such a fixed cost per call), and scores are <V[i], q> so answers are real.
For each setting and each number of concurrent clients, a bounded httpx load
generator sends ``--requests`` requests (each client one at a time), and
prints a markdown table. Bounded in time: every request has a 60 s timeout.

    python bench/serve_load.py --items 50000 --dim 128 --requests 200 --clients 1 8 32
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CALL_MS = float(os.environ.get("AXN_LOAD_CALL_MS", "5"))
PAIR_US = float(os.environ.get("AXN_LOAD_PAIR_US", "20"))


class SimulatedCE:
    """Query text "q<row>": scores <V[i], Q[row]>; sleeps CALL_MS + PAIR_US per pair for each call."""

    def __init__(self, V: np.ndarray, Q: np.ndarray) -> None:
        self.V, self.Q = V, Q

    def _cost(self, n_pairs: int) -> None:
        time.sleep(CALL_MS / 1e3 + PAIR_US / 1e6 * n_pairs)

    def __call__(self, q: str, ids: np.ndarray) -> np.ndarray:
        self._cost(len(ids))
        return self.V[ids] @ self.Q[int(q[1:])]

    def score_batch(self, queries, ids_per_query):
        self._cost(sum(len(i) for i in ids_per_query))
        return [self.V[ids] @ self.Q[int(q[1:])] for q, ids in zip(queries, ids_per_query)]


def make_ce(bundle):
    """The --ce-factory of the load test: the queries' matrix is saved next to the bundle."""
    Q = np.load(os.environ["AXN_LOAD_QUERIES"])
    return SimulatedCE(np.asarray(bundle.index.vectors), Q)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, max_batch: int, args: argparse.Namespace):
    import httpx

    port = _free_port()
    env = dict(os.environ, AXN_LOAD_QUERIES=str(root / "Q.npy"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent)]
                                          + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "axn_fast", "serve", str(root / "bundle"), "--port", str(port),
           "--ce-factory", "serve_load:make_ce", "--log-level", "warning", "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "1024", "--budget", str(args.budget),
           "--rounds", str(args.rounds), "--k", "10"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(url: str, clients: int, n_requests: int, n_queries: int):
    import httpx

    latencies, codes = [], []
    counter = iter(range(n_requests))

    async def client(c: httpx.AsyncClient) -> None:
        for i in counter:
            t0 = time.perf_counter()
            r = await c.post(url + "/search", json={"query": f"q{i % n_queries}"})
            latencies.append(time.perf_counter() - t0)
            codes.append(r.status_code)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return dict(qps=len(lat) / wall, p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)),
                ok=codes.count(200), n=len(codes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--requests", type=int, default=200, help="requests per (setting, clients)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    args = p.parse_args()

    import axn_fast
    from axn_fast.indexing.bundle import IndexBundle

    rng = np.random.default_rng(0)
    V = rng.standard_normal((args.items, args.dim)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    Q = rng.standard_normal((256, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        np.save(root / "Q.npy", Q)
        IndexBundle(axn_fast.Index(V), items=[f"item {i}" for i in range(args.items)]).save(root / "bundle")
        print(f"{args.items} x {args.dim} items, budget {args.budget}, R={args.rounds}; simulated CE "
              f"{CALL_MS:g} ms per call + {PAIR_US:g} us per pair; {args.requests} requests per cell\n")
        print("| setting | clients | requests/s | p50 ms | p99 ms | 200s |")
        print("|---|---|---|---|---|---|")
        for setting, mb in ((f"batching (max_batch={args.max_batch}, max_wait {args.max_wait_ms:g} ms)",
                             args.max_batch), ("max_batch=1", 1)):
            proc, url = start(root, mb, args)
            try:
                for c in args.clients:
                    r = asyncio.run(load(url, c, args.requests, len(Q)))
                    print(f"| {setting} | {c} | {r['qps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                          f"{r['ok']}/{r['n']} |", flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


if __name__ == "__main__":
    main()
