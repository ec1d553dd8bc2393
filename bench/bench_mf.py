"""Matrix factorisation (MF_TRNS) on a planted low-rank problem (issue 4).

G: 10K queries x 200K items, ~1M observed training entries + 50K held-out
entries, item popularity Zipf-like (p_i ~ 1 / (rank_i + 50)^0.8), values =
rank-32 product + N(0, 0.1^2) noise; embeddings of size d = 128 initialised
"like a DE": the planted factors in 32 of the 128 columns plus N(0, 0.15^2) noise
everywhere (held-out RMSE ~0.57 at the start), the same init for every method.

Groups (run with ``--benchmark-json`` and ``python bench/report.py`` for ratios):

- ``mf-time-to-rmse``: seconds until the held-out RMSE first reaches TARGET,
  for the C++ blocked SGD (axn_fast.indexing.factorize) and for PyTorch nn.Embedding +
  AdamW on Eq. 3 (what the paper's authors ran). Time spent computing the
  held-out RMSE is excluded for torch (it is checked every few steps) and
  included for the SGD (once per epoch).
- ``mf-epoch``: seconds per pass over G for the C++ SGD and LIBMF (PyPI
  ``libmf``, when installed) with the same d and thread count.

AXN_BENCH_SCALE shrinks the problem (all sizes), e.g. 0.05 for a smoke run.
"""
import os
import time

import numpy as np
import pytest

from axn_fast import ScoreMatrix, factorize
from axn_fast.indexing.factorize import rmse

SCALE = float(os.environ.get("AXN_BENCH_SCALE", "1"))
NQ, NI, NNZ, NVAL = (max(200, int(x * SCALE)) for x in (10_000, 200_000, 1_000_000, 50_000))
RANK, D, NOISE, INIT_NOISE = 32, 128, 0.1, 0.15
TARGET = 0.40  # held-out RMSE both methods reach (SGD's best is ~0.38, AdamW's ~0.39 after 4 epochs)
THREADS = int(os.environ.get("AXN_BENCH_THREADS", "2"))
TORCH_MAX_SECONDS = float(os.environ.get("AXN_BENCH_TORCH_MAX_S", "900"))
SGD = dict(lr=0.03, reg=0.02)
TORCH = dict(lr=0.01, batch_size=32768)  # tried: batch 4096 / lr 0.005 takes ~285 s per epoch here

RESULTS = {}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((NQ, RANK), dtype=np.float32) / RANK ** 0.25
    B = rng.standard_normal((NI, RANK), dtype=np.float32) / RANK ** 0.25
    pop = 1.0 / (np.arange(NI) + 50.0) ** 0.8
    pop = pop[rng.permutation(NI)]
    pop /= pop.sum()
    total = NNZ + NVAL
    rows = rng.integers(0, NQ, total)
    cols = rng.choice(NI, size=total, p=pop)
    first = np.sort(np.unique(rows * NI + cols, return_index=True)[1])  # distinct pairs
    rows, cols = rows[first], cols[first]
    vals = np.einsum("ij,ij->i", A[rows], B[cols]) + NOISE * rng.standard_normal(len(rows)).astype(np.float32)
    n_tr = len(rows) - NVAL
    G = ScoreMatrix(rows[:n_tr], cols[:n_tr], vals[:n_tr].astype(np.float32), (NQ, NI))
    H = ScoreMatrix(rows[n_tr:], cols[n_tr:], vals[n_tr:].astype(np.float32), (NQ, NI))
    rng = np.random.default_rng(1)
    U0 = np.zeros((NQ, D), np.float32)
    U0[:, :RANK] = A
    U0 += INIT_NOISE * rng.standard_normal(U0.shape, dtype=np.float32)
    V0 = np.zeros((NI, D), np.float32)
    V0[:, :RANK] = B
    V0 += INIT_NOISE * rng.standard_normal(V0.shape, dtype=np.float32)
    return G, H, U0, V0


def _sgd_to_target(G, H, U0, V0):
    U, V, hist = factorize(G, U0=U0, V0=V0, epochs=30, seed=0, validation=H, target_rmse=TARGET,
                           restore_best=False, num_threads=THREADS, **SGD)
    return {"epochs": len(hist.val_rmse), "rmse": hist.val_rmse[-1], "reached": hist.val_rmse[-1] <= TARGET}


def _torch_to_target(G, H, U0, V0):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    Ue = torch.nn.Embedding.from_pretrained(torch.from_numpy(U0.copy()), freeze=False)
    Ve = torch.nn.Embedding.from_pretrained(torch.from_numpy(V0.copy()), freeze=False)
    opt = torch.optim.AdamW(list(Ue.parameters()) + list(Ve.parameters()), lr=TORCH["lr"])
    r, c, v = (torch.from_numpy(np.array(x)) for x in (G.rows, G.cols, G.vals))
    bs = TORCH["batch_size"]
    spent, steps, cur = 0.0, 0, np.inf
    while spent < TORCH_MAX_SECONDS:
        perm = torch.randperm(G.nnz)
        for s in range(0, G.nnz, bs):
            t0 = time.perf_counter()
            i = perm[s:s + bs]
            loss = ((Ue(r[i]) * Ve(c[i])).sum(-1) - v[i]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            spent += time.perf_counter() - t0
            steps += 1
            if steps % 3 == 0:
                cur = rmse(H, Ue.weight.detach().numpy(), Ve.weight.detach().numpy(), num_threads=THREADS)
                if cur <= TARGET:
                    return {"epochs": steps * bs / G.nnz, "rmse": cur, "reached": True, "seconds": spent}
    return {"epochs": steps * bs / G.nnz, "rmse": cur, "reached": False, "seconds": spent}


@pytest.mark.parametrize("method", ["sgd-cpp", "torch-adamw"])
def test_time_to_rmse(benchmark, problem, method):
    if SCALE < 1:  # a shrunk problem has too few entries per parameter to reach TARGET
        pytest.skip("time to a held-out RMSE needs the full-size problem (AXN_BENCH_SCALE=1)")
    G, H, U0, V0 = problem
    benchmark.group = "mf-time-to-rmse"
    if method == "sgd-cpp":
        t0 = time.perf_counter()
        info = benchmark.pedantic(_sgd_to_target, args=(G, H, U0, V0), rounds=1, iterations=1)
        info["seconds"] = time.perf_counter() - t0
    else:
        pytest.importorskip("torch", reason="the torch baseline needs torch")
        info = benchmark.pedantic(_torch_to_target, args=(G, H, U0, V0), rounds=1, iterations=1)
        # the benchmark's own timer includes the held-out checks; report the training time too
    benchmark.extra_info.update(info, target=TARGET, nnz=G.nnz, d=D, threads=THREADS)
    RESULTS[method] = info
    print(f"\n{method}: {info}")
    assert info["reached"], f"{method} did not reach held-out RMSE {TARGET}: {info}"


EPOCHS = 5


@pytest.mark.parametrize("method", ["sgd-cpp", "libmf"])
def test_five_epochs(benchmark, problem, method):
    """Setup (blocking, shuffling) + 5 passes over G, d=128, same threads; per-epoch slope in extra_info."""
    G, H, U0, V0 = problem
    benchmark.group = "mf-setup+5-epochs"
    if method == "sgd-cpp":
        from axn_fast import _core

        def fit(epochs):
            U, V = U0.copy(), V0.copy()
            t0 = time.perf_counter()
            sgd = _core.SparseSgd(G.rows, G.cols, G.vals, NQ, NI, 16, 0)
            for t in range(epochs):
                sgd.epoch(U, V, SGD["lr"], SGD["reg"], THREADS, t)
            return time.perf_counter() - t0
    else:
        import warnings

        with warnings.catch_warnings():  # the binding compares strings with `is` (SyntaxWarning)
            warnings.simplefilter("ignore")
            mf_mod = pytest.importorskip("libmf.mf", reason="LIBMF's Python binding (pip install libmf)")
        X = np.stack([G.rows.astype(np.float32), G.cols.astype(np.float32), G.vals], axis=1)

        def fit(epochs):  # LIBMF: its own init, AdaGrad-style learning rates, nr_bins blocking
            model = mf_mod.MF(k=D, nr_threads=THREADS, nr_iters=epochs, eta=SGD["lr"], lambda_p2=SGD["reg"],
                              lambda_q2=SGD["reg"], lambda_p1=0.0, lambda_q1=0.0, quiet=True)
            t0 = time.perf_counter()
            model.fit(X)
            return time.perf_counter() - t0

    one = min(fit(1) for _ in range(2))
    times = []
    benchmark.pedantic(lambda: times.append(fit(EPOCHS)), rounds=3, iterations=1)
    per_epoch = (min(times) - one) / (EPOCHS - 1)
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, setup_plus_1_epoch=one, threads=THREADS, d=D)
    RESULTS[f"{method}-epoch"] = per_epoch
    print(f"\n{method}: {per_epoch:.3f} s per epoch (setup + 1 epoch {one:.3f} s)")
