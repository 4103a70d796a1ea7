"""PNG figures for parity reports (matplotlib, Agg backend, imported only when asked)."""

from __future__ import annotations

import os

import numpy as np

from wtransplant.atomic import atomic_path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, *, title: str = "", dpi: int = 110) -> str:
    """Lay out, write atomically as PNG, close."""
    plt = pyplot()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return str(path)


#: at most this many outputs get a scatter panel each
MAX_OUTPUT_PANELS = 8


def parity_plot(path: str | os.PathLike, *, actual=None, expected=None, layers=None,
                title: str = "") -> str:
    """Per-layer error on a log axis (if ``layers``: dicts with name, max_rel, ok) and a
    scatter of expected against actual outputs (if given). Written atomically."""
    plt = pyplot()

    pairs = []
    if actual is not None and expected is not None:
        pairs = list(zip(_as_list(actual), _as_list(expected)))[:MAX_OUTPUT_PANELS]
    panels = (1 if layers else 0) + len(pairs)
    if panels == 0:
        raise ValueError("nothing to plot")
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    axes = list(axes[0])
    if layers:
        ax = axes.pop(0)
        names = [d["name"] for d in layers]
        errs = [max(float(d["max_rel"]), 1e-17) for d in layers]
        colors = ["tab:green" if d["ok"] else "tab:red" for d in layers]
        ax.bar(range(len(names)), errs, color=colors)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("max relative error")
        ax.set_title("per-layer error against the reference")
        ax.axhline(1e-5, color="gray", linestyle="--", linewidth=1, label="divergence threshold 1e-5")
        ax.legend(loc="upper left", fontsize=8)
    for k, (act, exp) in enumerate(pairs):  # one panel per output
        ax = axes.pop(0)
        a = np.asarray(act, np.float64).ravel()
        e = np.asarray(exp, np.float64).ravel()
        if a.size > 20000:
            idx = np.random.default_rng(0).choice(a.size, 20000, replace=False)
            a, e = a[idx], e[idx]
        ax.scatter(e, a, s=4, alpha=0.5)
        lo, hi = float(min(e.min(), a.min())), float(max(e.max(), a.max()))
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1)
        ax.set_xlabel("expected")
        ax.set_ylabel("actual")
        ax.set_title("outputs: actual against expected" if len(pairs) == 1 else
                     f"output {k}: actual against expected")
    return save_figure(fig, path, title=title)


def _as_list(x):
    return list(x) if isinstance(x, list | tuple) else [x]
