"""axn_fast on Ray, end to end: G on a pool of CE actors, a sharded index, AXN behind Ray Serve.

    pip install 'axn_fast[ray]'
    python examples/ray_serve_example.py                      # a local Ray cluster (2 CPUs)
    python examples/ray_serve_example.py --address auto       # a cluster started with `ray start`

The cross-encoder here is a stand-in that reads a synthetic score matrix (so the
example runs in a minute on a laptop); for a real one pass
``CESpec(items=tuple(item_texts), name="minilm-emb-cos")`` as the factory and give
each actor a GPU with ``num_gpus_per_worker=1`` / ``ray_actor_options={"num_gpus": 1}``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from typing import Optional

import numpy as np
import ray
from numpy.typing import NDArray
from ray import serve

from axn_fast import DenseScoreCE, factorize
from axn_fast.datasets.synthetic import low_rank_scores
from axn_fast.distributed import ShardedIndex, build_score_matrix_ray
from axn_fast.distributed.deployment import axn_deployment
from axn_fast.evaluation.metrics import topk_recall


class DenseCEFactory:
    """Builds, in each actor or replica, a CE over a dense score matrix (query = row number)."""

    def __init__(self, S: NDArray[np.float32]) -> None:
        self.S = S

    def __call__(self) -> DenseScoreCE:
        return DenseScoreCE(self.S)


def main(address: Optional[str], n_items: int, port: int) -> None:
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=2, include_dashboard=False)
    n_train, n_test = 300, 20
    data = low_rank_scores(n_train + n_test, n_items, rank=16, noise=0.2, seed=0)
    S_train, S_test = data.scores[:n_train], data.scores[n_train:]

    # 1. the sparse matrix G of exact CE scores, on two CE actors (resumable: re-run and it skips what is done)
    with tempfile.TemporaryDirectory() as ckpt:
        t0 = time.perf_counter()
        G = build_score_matrix_ray(DenseCEFactory(S_train), list(range(n_train)), n_items, strategy="de-topk",
                                   k_d=64, de_query_emb=data.query_emb[:n_train], de_item_emb=data.item_emb,
                                   checkpoint_dir=ckpt, ce_id="synthetic-dense", num_workers=2,
                                   num_cpus_per_worker=0.5)
        print(f"G: {G.nnz} CE scores from 2 actors in {time.perf_counter() - t0:.1f} s")

    # 2. item embeddings by matrix factorisation of G, spread over 2 shard actors
    _, V, _ = factorize(G, U0=data.query_emb[:n_train], V0=data.item_emb, epochs=20, seed=0,
                        show_progress_bar=False)
    with ShardedIndex.from_arrays(V, 2, actor_options={"num_cpus": 0}) as index:
        print(index)

        # 3. AXN behind Ray Serve: concurrent requests are batched into one adaptive_search_batch
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = axn_deployment(index, DenseCEFactory(S_test), k=10, budget=100, rounds=5, max_batch_size=16,
                             batch_wait_timeout_s=0.01, ray_actor_options={"num_cpus": 0})
        handle = serve.run(app, name="axn", route_prefix="/axn")
        answers = [r.result() for r in [handle.search.remote(q) for q in range(n_test)]]
        truth = np.argsort(-S_test, axis=1)[:, :10]
        recall = float(np.mean(topk_recall([np.array(a["ids"]) for a in answers], truth, 10)))
        print(f"AXN via a handle: {n_test} queries, top-10 recall {recall:.3f} with 100 CE calls each, "
              f"largest batch {max(a['batch_size'] for a in answers)}")

        req = urllib.request.Request(f"http://127.0.0.1:{port}/axn", data=json.dumps({"query": 3, "k": 5}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            print("POST /axn {'query': 3, 'k': 5} ->", json.loads(resp.read()))
        serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    parser.add_argument("--n-items", type=int, default=5000)
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of Ray Serve")
    args = parser.parse_args()
    main(args.address, args.n_items, args.port)
