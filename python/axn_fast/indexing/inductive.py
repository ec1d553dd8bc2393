"""Inductive matrix factorisation MF_IND (AXN paper, §2.1 and Appendix A.2.2). Needs torch.

Two small MLPs, one for queries and one for items, map frozen dual-encoder
(DE) embeddings x (d,) to new embeddings:

    x'   = b2 + W2^T gelu(b1 + W1^T x)          (hidden size 2d)
    out  = sigmoid(w) x' + (1 - sigmoid(w)) x    (w initialised to -5)

so training starts next to the DE (sigmoid(-5) = 0.0067). They are trained
with AdamW on the observed entries of G to minimise the mean of
(G_qi - f(x_q) . g(x_i))^2. Because they are functions of the DE embedding,
they embed items added later and test queries without refitting; the query
MLP's output is the ``u0`` of :meth:`axn_fast.Index.adaptive_search`.
Weights are saved as safetensors (no pickle).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from axn_fast._validation import as_float32_array, check_float, check_int
from axn_fast._progress import progress
from axn_fast.indexing.factorize import as_validation
from axn_fast.indexing.score_matrix import ScoreMatrix

SKIP_INIT = -5.0
_FORMAT = "axn_fast.inductive_mf"


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the ce extra
        raise ImportError("InductiveMF needs torch: pip install 'axn_fast[ce]'") from exc
    return torch


def _skip_mlp_class() -> Any:
    torch = _torch()
    nn = torch.nn

    class SkipMLP(nn.Module):  # type: ignore[name-defined,misc]  # torch is imported lazily
        """x -> sigmoid(w) (b2 + W2^T gelu(b1 + W1^T x)) + (1 - sigmoid(w)) x."""

        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.lin1 = nn.Linear(dim, hidden)
            self.lin2 = nn.Linear(hidden, dim)
            self.w_skip = nn.Parameter(torch.tensor(SKIP_INIT))

        def forward(self, x: Any) -> Any:
            g = torch.sigmoid(self.w_skip)
            return g * self.lin2(torch.nn.functional.gelu(self.lin1(x))) + (1 - g) * x

    return SkipMLP


@contextlib.contextmanager
def torch_threads(num_threads: Optional[int]) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(num_threads)`` and restore the previous count after,
    whatever happens (None: leave torch's setting alone). The setting is process-wide while the body runs."""
    if num_threads is None:
        yield
        return
    torch = _torch()
    n = check_int(num_threads, "num_threads", minimum=1)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _skip_shapes(dim: int, hidden: int) -> Dict[str, Tuple[int, ...]]:
    return {"lin1.weight": (hidden, dim), "lin1.bias": (hidden,), "lin2.weight": (dim, hidden),
            "lin2.bias": (dim,), "w_skip": ()}


@dataclass
class InductiveHistory:
    """Per-epoch mean squared-error loss (train), validation RMSE and seconds."""

    train_rmse: List[float] = field(default_factory=list)
    val_rmse: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)


class InductiveMF:
    """MF_IND: a query MLP and an item MLP over frozen DE embeddings of size ``dim``.

    dim : the DE embedding size d (input = output size); hidden : MLP width
    (default 2d, as in the paper); seed : torch initialisation seed.
    """

    def __init__(self, dim: int, *, hidden: Optional[int] = None, seed: int = 0) -> None:
        torch = _torch()
        self.dim = check_int(dim, "dim", minimum=1)
        self.hidden = check_int(2 * self.dim if hidden is None else hidden, "hidden", minimum=1)
        SkipMLP = _skip_mlp_class()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(check_int(seed, "seed", minimum=0))
        try:
            self.query_mlp = SkipMLP(self.dim, self.hidden)
            self.item_mlp = SkipMLP(self.dim, self.hidden)
        finally:
            torch.random.set_rng_state(gen_state)
        self.history = InductiveHistory()

    # ------------------------------------------------------------------ training
    def fit(self, G: Any, query_emb: Any, item_emb: Any, *, epochs: int = 20, lr: float = 0.005,
            weight_decay: float = 0.01, batch_size: int = 4096, validation: Any = None, seed: int = 0,
            device: str = "cpu", num_threads: Optional[int] = None,
            show_progress_bar: Optional[bool] = None) -> "InductiveMF":
        """Train both MLPs with AdamW on the entries of G (Table 2 of the paper: lr 0.005-0.001, 10-20 epochs).

        G : ScoreMatrix / scipy sparse (n_train_queries, n_items) of (normalised) CE scores.
        query_emb : (n_train_queries, dim) DE embeddings of G's rows; item_emb : (n_items, dim).
        validation : optional held-out entries of the same shape ((rows, cols, vals) or a ScoreMatrix).
        batch_size : entries per AdamW step (entries are reshuffled every epoch from ``seed``).
        num_threads : torch CPU threads during training (None: torch's setting). Small
            MLPs train faster on 1 thread than on many busy ones. torch's thread count is
            restored when ``fit`` returns or raises.
        """
        torch = _torch()
        G = ScoreMatrix.from_any(G)
        Q = as_float32_array(query_emb, "query_emb", ndim=(2,), dim=self.dim)
        I = as_float32_array(item_emb, "item_emb", ndim=(2,), dim=self.dim)
        if Q.shape[0] != G.shape[0] or I.shape[0] != G.shape[1]:
            raise ValueError(f"G has shape {G.shape} but query_emb has {Q.shape[0]} rows and item_emb "
                             f"{I.shape[0]}")
        if G.nnz == 0:
            raise ValueError("G has no observed entries to train on")
        epochs = check_int(epochs, "epochs", minimum=1)
        lr = check_float(lr, "lr", minimum=0.0)
        weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        val = as_validation(validation, G.shape)
        if num_threads is not None:
            check_int(num_threads, "num_threads", minimum=1)
        dev = torch.device(device)
        with torch_threads(num_threads):
            self._fit(G, Q, I, val, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                      seed=seed, dev=dev, show_progress_bar=show_progress_bar)
        return self

    def _fit(self, G: ScoreMatrix, Q: np.ndarray, I: np.ndarray, val: Optional[ScoreMatrix], *, epochs: int,
             lr: float, weight_decay: float, batch_size: int, seed: int, dev: Any,
             show_progress_bar: Optional[bool]) -> None:
        torch = _torch()
        self.query_mlp.to(dev).train()
        self.item_mlp.to(dev).train()
        Qt, It = torch.from_numpy(Q).to(dev), torch.from_numpy(I).to(dev)
        rows = torch.from_numpy(G.rows.copy()).to(dev)
        cols = torch.from_numpy(G.cols.copy()).to(dev)
        vals = torch.from_numpy(G.vals.copy()).to(dev)
        params = list(self.query_mlp.parameters()) + list(self.item_mlp.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
        bar = progress(total=epochs, desc="MF_IND (AdamW)", unit="epoch", show=show_progress_bar)
        try:
            for _ in range(epochs):
                t0 = time.perf_counter()
                perm = torch.randperm(G.nnz, generator=gen).to(dev)
                sq = 0.0
                for s in range(0, G.nnz, batch_size):
                    idx = perm[s:s + batch_size]
                    r, c, y = rows[idx], cols[idx], vals[idx]
                    ur, r_inv = torch.unique(r, return_inverse=True)
                    uc, c_inv = torch.unique(c, return_inverse=True)
                    pred = (self.query_mlp(Qt[ur])[r_inv] * self.item_mlp(It[uc])[c_inv]).sum(-1)
                    loss = torch.mean((pred - y) ** 2)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sq += float(loss.detach()) * len(idx)
                self.history.train_rmse.append(float(np.sqrt(sq / G.nnz)))
                self.history.seconds.append(time.perf_counter() - t0)
                if val is not None:
                    self.history.val_rmse.append(self.rmse(val, Q, I))
                bar.update(1)
                bar.set_postfix(train_rmse=f"{self.history.train_rmse[-1]:.4f}", refresh=False)
        finally:
            bar.close()
            self.query_mlp.cpu().eval()
            self.item_mlp.cpu().eval()

    # ------------------------------------------------------------------ inference
    def _embed(self, mlp: Any, X: Any, name: str, batch_size: int) -> np.ndarray:
        torch = _torch()
        X = as_float32_array(X, name, ndim=(1, 2), dim=self.dim)
        single = X.ndim == 1
        X2 = X.reshape(1, -1) if single else X
        out = np.empty_like(X2)
        dev = next(mlp.parameters()).device
        with torch.inference_mode():
            for s in range(0, X2.shape[0], batch_size):
                out[s:s + batch_size] = mlp(torch.from_numpy(X2[s:s + batch_size]).to(dev)).float().cpu().numpy()
        return out[0] if single else out

    def embed_queries(self, X: Any, *, batch_size: int = 8192) -> np.ndarray:
        """MF_IND query embeddings of DE query embeddings X: (dim,) or (n, dim) -> same shape float32."""
        return self._embed(self.query_mlp, X, "X", batch_size)

    def embed_items(self, X: Any, *, batch_size: int = 8192) -> np.ndarray:
        """MF_IND item embeddings of DE item embeddings X: (dim,) or (n, dim) -> same shape float32."""
        return self._embed(self.item_mlp, X, "X", batch_size)

    def rmse(self, G: Any, query_emb: Any, item_emb: Any) -> float:
        """RMSE of G's entries against embed_queries(query_emb) . embed_items(item_emb)."""
        G = ScoreMatrix.from_any(G)
        rows_u, r_inv = np.unique(G.rows, return_inverse=True)
        cols_u, c_inv = np.unique(G.cols, return_inverse=True)
        U = self.embed_queries(np.asarray(query_emb)[rows_u]) if rows_u.size else np.zeros((0, self.dim))
        V = self.embed_items(np.asarray(item_emb)[cols_u]) if cols_u.size else np.zeros((0, self.dim))
        pred = np.einsum("ij,ij->i", U[r_inv].astype(np.float64), V[c_inv].astype(np.float64))
        return float(np.sqrt(np.mean((pred - G.vals) ** 2))) if G.nnz else 0.0

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Name -> float32 numpy array (what :meth:`save` writes)."""
        out = {}
        for prefix, mlp in (("query", self.query_mlp), ("item", self.item_mlp)):
            for k, v in mlp.state_dict().items():
                out[f"{prefix}.{k}"] = v.detach().cpu().float().numpy().reshape(v.shape)
        return out

    def save(self, path: Union[str, Path]) -> None:
        """Write the weights to a safetensors file (config in its metadata)."""
        from safetensors.numpy import save_file

        meta = {"format": _FORMAT, "dim": str(self.dim), "hidden": str(self.hidden)}
        save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "InductiveMF":
        """Read weights written by :meth:`save` (safetensors: loading cannot run code).

        The header's dim/hidden and every tensor's declared shape are checked
        against each other (and safetensors checks them against the file's
        size) before any model is built, so a small crafted file cannot make
        this allocate more than the file holds. Raises ValueError.
        """
        torch = _torch()
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} does not hold InductiveMF weights (metadata {json.dumps(meta)[:200]})")
        try:
            dim, hidden = int(meta["dim"]), int(meta["hidden"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{str(path)!r} has no valid dim/hidden in its metadata") from exc
        if dim < 1 or hidden < 1:
            raise ValueError(f"{str(path)!r} declares dim={dim}, hidden={hidden}; both must be >= 1")
        want = {f"{p}.{k}": v for p in ("query", "item") for k, v in _skip_shapes(dim, hidden).items()}
        bad = sorted(set(want) ^ set(shapes)) or sorted(
            k for k in want if shapes[k] != want[k] and not (want[k] == () and shapes[k] in ((1,), ())))
        if bad:
            raise ValueError(f"{str(path)!r} has tensors that do not fit MLPs of dim {dim}, hidden {hidden} "
                             f"(e.g. {bad[0]!r}: {shapes.get(bad[0])} in the file, {want.get(bad[0])} expected)")
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc
        for k, v in tensors.items():
            if v.dtype != np.float32 or not np.isfinite(v).all():
                raise ValueError(f"{str(path)!r}: tensor {k!r} must be finite float32, got {v.dtype}")
        self = cls(dim, hidden=hidden)
        for prefix, mlp in (("query", self.query_mlp), ("item", self.item_mlp)):
            state = mlp.state_dict()
            mlp.load_state_dict({k: torch.from_numpy(np.array(tensors[f"{prefix}.{k}"], dtype=np.float32)
                                                     .reshape(tuple(state[k].shape))) for k in state})
        return self
