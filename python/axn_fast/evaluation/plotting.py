"""Recall-versus-budget plots (matplotlib, Agg backend): one panel per k, one line per method."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from axn_fast.evaluation.evaluate import EvalTable

PathLike = Union[str, "os.PathLike[str]"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_recall_vs_budget(table: EvalTable, path: PathLike, *, title: Optional[str] = None) -> None:
    """Draw Top-k-Recall@m against m for every method of ``table`` (an :class:`~axn_fast.evaluation.evaluate.EvalTable`)
    and save it to ``path`` (the format follows the suffix: .png, .pdf, .svg).

    EXACT rows (m = number of items) are left out: their recall is 1 by definition.
    """
    plt = _pyplot()
    rows = [r for r in table.rows if r["method"] != "EXACT"]
    if not rows:
        raise ValueError("table has no rows to plot (only EXACT rows or empty)")
    ks = sorted({r["k"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    budgets = sorted({r["m"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.8), squeeze=False)
    markers = "os^vD<>pPX*h"
    for ax, k in zip(axes[0], ks):
        for i, name in enumerate(methods):
            pts = sorted((r["m"], r["recall"]) for r in rows if r["method"] == name and r["k"] == k)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, [100 * y for y in ys], marker=markers[i % len(markers)], label=name,
                        linestyle="--" if name.startswith(("RNR", "TF-IDF", "BM25")) else "-")
        ax.set_xscale("log")
        ax.set_xlim(budgets[0] / 1.25, budgets[-1] * 1.25)
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("m (CE calls per query)")
        ax.set_title(f"Top-{k}-Recall@m")
        ax.set_ylim(0, 102)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("recall (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1 + 0.04 * ((len(labels) - 1) // 5), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_axn_vs_rnr(rows: Sequence[Any], ks: Sequence[int], path: PathLike, *, title: str) -> None:
    """The demo's plot: Top-k-Recall@m (%) against m for AXN-DE and RNR-DE, one panel per k.

    rows: :class:`~axn_fast.evaluation.demo.DemoRow` objects (``method``, ``m``, ``recall[k]``).
    """
    if not ks:
        raise ValueError("ks must name at least one k")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.6), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for method, style in (("AXN-DE", "o-"), ("RNR-DE", "s--")):
            pts = sorted((r.m, r.recall[k]) for r in rows if r.method == method)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=method)
        ax.set_xlabel("m (CE calls per query)")
        ax.set_title(f"Top-{k}-Recall@m")
        ax.set_ylim(0, 102)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("recall (%)")
    axes[0][0].legend(loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
