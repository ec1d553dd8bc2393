"""Transductive matrix factorisation MF_TRNS (AXN paper, §2.1, Eq. 3).

Fits query embeddings U and item embeddings V to the observed entries of the
sparse CE matrix G by parallel SGD in C++ (see ``csrc/core/sgd.hpp``):

    min  sum_{(q,i) in G} (G_qi - U_q . V_i)^2 + reg (|U_q|^2 + |V_i|^2)   (per entry)

Only rows and columns with observed entries are ever updated, so items that no
train query scored keep their initial (e.g. dual-encoder) embedding — the
paper's Appendix B.3 finding that MF_TRNS helps only the items that were scored.

Defaults are safe for a sparse G: without a validation set a random
:data:`AUTO_VAL_FRACTION` of the entries is held out (early stopping on it, patience
:data:`AUTO_PATIENCE`, the best epoch returned), ``lr="auto"`` is ``AUTO_LR / rms(G)`` and
``reg="auto"`` is ``AUTO_REG * rms(G) * dim / min(mean entries per row, per column)``: the
fewer observations each embedding has for its ``dim`` parameters, the stronger the penalty
(a planted rank-8 matrix, 2000 x 5000 with 57 entries per row, noise 0.05, std 1, ``dim=16``:
held-out RMSE 1.03 with the former defaults lr=0.01, reg=0.01, 20 epochs, no validation).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from axn_fast._core import SparseSgd, sparse_rmse
from axn_fast._validation import as_float32_array, check_float, check_int, resolve_num_threads
from axn_fast._progress import progress
from axn_fast.indexing.score_matrix import ScoreMatrix


#: Share of G's entries held out for early stopping when no validation set is given.
AUTO_VAL_FRACTION = 0.05
#: The automatic hold-out needs at least this many entries in G (below it, nothing is held out).
AUTO_VAL_MIN_NNZ = 2000
#: Early-stopping patience (epochs) on the automatic hold-out.
AUTO_PATIENCE = 20
#: ``lr="auto"`` = AUTO_LR / rms(G): SGD's step on an embedding scales with the size of the scores.
AUTO_LR = 0.03
#: ``reg="auto"`` = AUTO_REG * rms(G) * dim / min(mean entries per non-empty row, per non-empty column).
AUTO_REG = 0.15


@dataclass
class FactorizationHistory:
    """What happened per epoch.

    train_rmse : RMSE of the residuals met during each SGD pass (before each step).
    val_rmse : held-out RMSE after each epoch (empty without validation).
    lr : learning rate used in each epoch.
    seconds : wall-clock seconds of each epoch (SGD only, not validation).
    best_epoch : epoch (0-based) whose U, V are returned (the best validation
        RMSE when validation was given and restore_best, else the last).
    stopped_early : True when patience or target_rmse ended training.
    held_out : entries of G held out automatically as the validation set (0: none).
    lr0, reg : the learning rate of epoch 0 and the L2 weight used ("auto" resolved).
    """

    train_rmse: List[float] = field(default_factory=list)
    val_rmse: List[float] = field(default_factory=list)
    lr: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    held_out: int = 0
    lr0: float = float("nan")
    reg: float = float("nan")


def _init_factor(X0: Any, n: int, dim: int, scale: float, rng: np.random.Generator, name: str) -> np.ndarray:
    if X0 is None:
        return (scale * rng.standard_normal((n, dim))).astype(np.float32)
    X = as_float32_array(X0, name, ndim=(2,))
    if X.shape != (n, dim):
        raise ValueError(f"{name} must have shape ({n}, {dim}) (rows of G by dim), got {X.shape}")
    return X.copy()  # never update the caller's array


def as_validation(validation: Any, shape: Tuple[int, int]) -> Optional[ScoreMatrix]:
    """Held-out entries of a matrix of ``shape`` as a ScoreMatrix: a ScoreMatrix, a scipy sparse
    matrix, (rows, cols, vals) or (rows, cols, vals, shape); None stays None."""
    if validation is None:
        return None
    if isinstance(validation, (tuple, list)) and len(validation) == 3:
        validation = (*validation, shape)
    V = ScoreMatrix.from_any(validation, "validation")
    if V.shape != tuple(shape):
        raise ValueError(f"validation has shape {V.shape} but G has shape {tuple(shape)}")
    return V


def auto_reg(G: ScoreMatrix, dim: int) -> float:
    """The L2 weight of ``reg="auto"`` for G's density: ``AUTO_REG * rms(G) * dim / min(r, c)``,
    r and c the mean number of entries per non-empty row and per non-empty column."""
    if G.nnz == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(G.vals.astype(np.float64) ** 2)))
    per = min(G.nnz / np.unique(G.rows).size, G.nnz / np.unique(G.cols).size)
    return AUTO_REG * max(rms, 1e-6) * dim / per


def _hold_out(G: ScoreMatrix, fraction: float, rng: np.random.Generator) -> Tuple[ScoreMatrix, ScoreMatrix]:
    n_val = int(round(fraction * G.nnz))
    perm = rng.permutation(G.nnz)
    v, t = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (ScoreMatrix(G.rows[t], G.cols[t], G.vals[t], G.shape),
            ScoreMatrix(G.rows[v], G.cols[v], G.vals[v], G.shape))


def factorize(G: Any, *, dim: Optional[int] = None, U0: Any = None, V0: Any = None, epochs: int = 100,
              lr: Union[float, str] = "auto", reg: Union[float, str] = "auto", lr_decay: float = 0.0,
              num_threads: int = 0, seed: Optional[int] = None, validation: Any = None,
              val_fraction: Optional[float] = None, patience: Optional[int] = None,
              restore_best: bool = True, target_rmse: Optional[float] = None, n_blocks: int = 16,
              show_progress_bar: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray, FactorizationHistory]:
    """Fit U (n_queries, dim) and V (n_items, dim) to the observed entries of G.

    G : :class:`~axn_fast.indexing.score_matrix.ScoreMatrix`, a scipy sparse matrix, or
        (rows, cols, vals, shape). Every stored entry is an observation (explicit
        zeros included); values must be finite.
    dim : embedding size; inferred from U0 / V0 when given (then it must agree).
    U0, V0 : initial embeddings (the DE's, usually); random N(0, s^2) when absent,
        with s chosen so that initial predictions are ~10% of G's RMS. Not modified.
    epochs : maximum number of passes over G.
    lr : SGD learning rate of epoch 0; epoch t uses lr / (1 + lr_decay * t). "auto":
        ``AUTO_LR / rms(G)`` (0.03 for unit-scale scores).
    reg : L2 weight applied at every step to the two embeddings it touches. "auto":
        :func:`auto_reg`, stronger the fewer entries per row / column G has.
    num_threads : 0 = all cores. Results do not depend on it (see below).
    seed : shuffling seed (None: a fresh random one). With a seed, the result is
        bit-reproducible on a given CPU for any num_threads (it depends on seed
        and n_blocks only).
    validation : held-out entries (same kinds as G, or (rows, cols, vals)); their
        RMSE is computed after each epoch.
    val_fraction : without ``validation``, the share of G's entries held out at random
        (with ``seed``) as the validation set and not trained on. None: AUTO_VAL_FRACTION
        (5%) when G has at least AUTO_VAL_MIN_NNZ entries, else nothing; 0: nothing held out
        (train on every entry, no early stopping: the behaviour before these defaults).
    patience : with validation, stop after this many epochs without a better
        validation RMSE (None: never stop early; AUTO_PATIENCE on the automatic hold-out).
    restore_best : with validation, return the embeddings of the best epoch.
    target_rmse : with validation, stop as soon as the validation RMSE is <= this.
    n_blocks : B of the blocked lock-free scheme (B x B blocks, B strata per epoch).

    Returns ``(U, V, history)``: float32 arrays and a :class:`FactorizationHistory`.
    """
    G = ScoreMatrix.from_any(G)
    n_rows, n_cols = G.shape
    epochs = check_int(epochs, "epochs", minimum=1)
    for name, value in (("lr", lr), ("reg", reg)):
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"{name} must be a number or 'auto', got {value!r}")
    if not (isinstance(lr, str) and lr == "auto"):
        lr = check_float(lr, "lr", minimum=0.0)
        if lr <= 0:
            raise ValueError("lr must be > 0")
    if not (isinstance(reg, str) and reg == "auto"):
        reg = check_float(reg, "reg", minimum=0.0)
    if val_fraction is not None:
        val_fraction = check_float(val_fraction, "val_fraction", minimum=0.0, maximum=0.5)
    lr_decay = check_float(lr_decay, "lr_decay", minimum=0.0)
    n_blocks = check_int(n_blocks, "n_blocks", minimum=1, maximum=4096)
    threads = resolve_num_threads(num_threads)
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2 ** 63))
    seed = check_int(seed, "seed", minimum=0)
    if patience is not None:
        patience = check_int(patience, "patience", minimum=1)
    if target_rmse is not None:
        target_rmse = check_float(target_rmse, "target_rmse", minimum=0.0)

    dims = {name: X.shape[1] for name, X in (("U0", U0), ("V0", V0))
            if X is not None and hasattr(X, "shape") and len(X.shape) == 2}
    if dim is None:
        if not dims:
            raise ValueError("give dim, or initial embeddings U0 / V0 to take it from")
        dim = next(iter(dims.values()))
    dim = check_int(dim, "dim", minimum=1)
    for name, d in dims.items():
        if d != dim:
            raise ValueError(f"{name} has {d} columns but dim is {dim}")

    rng = np.random.default_rng(seed)
    rms = float(np.sqrt(np.mean(G.vals.astype(np.float64) ** 2))) if G.nnz else 1.0
    scale = float(np.sqrt(0.1 * max(rms, 1e-6) / np.sqrt(dim)))
    U = _init_factor(U0, n_rows, dim, scale, rng, "U0")
    V = _init_factor(V0, n_cols, dim, scale, rng, "V0")
    val = as_validation(validation, G.shape)
    held_out = 0
    if val is None:
        if val_fraction is None:
            val_fraction = AUTO_VAL_FRACTION if G.nnz >= AUTO_VAL_MIN_NNZ else 0.0
        if val_fraction > 0:
            # a generator of its own, so that U0/V0's random draws do not depend on it
            G, val = _hold_out(G, val_fraction, np.random.default_rng([seed, 1]))
            held_out = val.nnz
            if patience is None:
                patience = AUTO_PATIENCE
    if val is None and (patience is not None or target_rmse is not None):
        raise ValueError("patience and target_rmse need validation entries (pass validation, or leave "
                         "val_fraction at None / > 0 for the automatic hold-out)")
    lr = AUTO_LR / max(rms, 1e-6) if isinstance(lr, str) else lr
    reg = auto_reg(G, dim) if isinstance(reg, str) else reg

    sgd = SparseSgd(G.rows, G.cols, G.vals, n_rows, n_cols, n_blocks, seed)
    hist = FactorizationHistory(held_out=held_out, lr0=float(lr), reg=float(reg))
    best_rmse, best_epoch, best_uv = np.inf, -1, None
    bar = progress(total=epochs, desc="MF_TRNS (SGD)", unit="epoch", show=show_progress_bar)
    try:
        for t in range(epochs):
            lr_t = lr / (1.0 + lr_decay * t)
            t0 = time.perf_counter()
            train = sgd.epoch(U, V, lr_t, reg, threads, t)
            hist.seconds.append(time.perf_counter() - t0)
            if not np.isfinite(train):
                raise FloatingPointError(
                    f"SGD diverged in epoch {t} (training RMSE {train}); lower lr (was {lr_t:g})")
            hist.train_rmse.append(float(train))
            hist.lr.append(lr_t)
            hist.best_epoch = t
            bar.update(1)
            if val is None:
                bar.set_postfix(train_rmse=f"{train:.4f}", refresh=False)
                continue
            v = float(sparse_rmse(val.rows, val.cols, val.vals, U, V, threads))
            hist.val_rmse.append(v)
            bar.set_postfix(train_rmse=f"{train:.4f}", val_rmse=f"{v:.4f}", refresh=False)
            if v < best_rmse:
                best_rmse, best_epoch, best_uv = v, t, ((U.copy(), V.copy()) if restore_best else None)
            if target_rmse is not None and v <= target_rmse:
                hist.stopped_early = t < epochs - 1
                break
            if patience is not None and t - best_epoch >= patience:
                hist.stopped_early = True
                break
    finally:
        bar.close()
    if val is not None and restore_best and best_uv is not None and best_epoch != hist.best_epoch:
        U, V = best_uv
        hist.best_epoch = best_epoch
    return U, V, hist


def rmse(G: Any, U: Any, V: Any, *, num_threads: int = 0) -> float:
    """RMSE of the observed entries of G against U V^T (double-precision sums)."""
    G = ScoreMatrix.from_any(G)
    U = as_float32_array(U, "U", ndim=(2,))
    V = as_float32_array(V, "V", ndim=(2,), dim=U.shape[1])
    if U.shape[0] != G.shape[0] or V.shape[0] != G.shape[1]:
        raise ValueError(f"U {U.shape} and V {V.shape} do not match G's shape {G.shape}")
    return float(sparse_rmse(G.rows, G.cols, G.vals, U, V, resolve_num_threads(num_threads)))
