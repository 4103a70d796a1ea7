"""Layer 1 (numpy, json, matplotlib on demand): what a fine-tuning run writes besides the
model: checkpoints (every epoch, for ``--resume``), ``history.csv``/``history.json``, the
learning-curves PNG. Every file is written under a temporary name and renamed."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from wtransplant.atomic import atomic_path, write_json
from wtransplant.errors import InputError

CHECKPOINT_VERSION = 1
STATE = "state.json"


# --------------------------------------------------------------------------------------
# checkpoints: <dir>/epoch-NNNN.npz (model variables, optimizer variables, random-generator
# states) + <dir>/state.json (written last: it names the complete arrays file)


def save_checkpoint(directory: Path, epochs_done: int, arrays: dict[str, np.ndarray],
                    state: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epochs_done:04d}.npz"
    with atomic_path(directory / name) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    write_json(directory / STATE, {**state, "wtransplant_checkpoint": CHECKPOINT_VERSION,
                                   "epochs_done": epochs_done, "arrays": name})
    for old in directory.glob("epoch-*.npz"):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()
    return directory / name


def load_checkpoint(directory: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(state, arrays) of the last complete checkpoint in ``directory``."""
    sp = directory / STATE
    if not sp.is_file():
        raise InputError(f"resume: no checkpoint in {directory} (nothing to resume; run "
                         f"without resume)")
    try:
        state = json.loads(sp.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{sp}: unreadable checkpoint state: {e}") from None
    if state.get("wtransplant_checkpoint") != CHECKPOINT_VERSION:
        raise InputError(f"{sp}: not a wtransplant checkpoint (version "
                         f"{state.get('wtransplant_checkpoint')!r})")
    ap = directory / str(state.get("arrays"))
    try:
        with np.load(ap, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{ap}: unreadable checkpoint arrays: {e}") from None
    return state, arrays


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


# --------------------------------------------------------------------------------------
# history


def history_dict(rows: list[dict]) -> dict[str, list]:
    """Rows (one per epoch) -> {metric: [value per epoch]}, like keras' History.history."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r["logs"] if k not in keys]
    return {k: [r["logs"].get(k) for r in rows] for k in keys}


def write_history(run_dir: Path, rows: list[dict], meta: dict) -> dict[str, str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    hist = history_dict(rows)
    write_json(run_dir / "history.json", {**meta, "epochs": rows, "history": hist})
    fixed = ["epoch", "phase", "lr"]
    metrics = list(hist)
    extra = ["seconds", "samples_per_s"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fixed + metrics + extra)
    for r in rows:
        w.writerow([r["epoch"] + 1, r["phase"], _num(r.get("lr"))]
                   + [_num(r["logs"].get(k)) for k in metrics]
                   + [_num(r.get("seconds")), _num(r.get("samples_per_s"))])
    with atomic_path(run_dir / "history.csv") as tmp:
        tmp.write_text(buf.getvalue())
    return {"history_json": str(run_dir / "history.json"),
            "history_csv": str(run_dir / "history.csv")}


def _num(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


def plot_curves(path: Path, rows: list[dict], title: str) -> str | None:
    """Loss (and the first metric) per epoch, training and validation; phases shaded."""
    if not rows:
        return None
    from matplotlib.ticker import MaxNLocator

    from wtransplant.checking.plots import pyplot, save_figure

    plt = pyplot()

    hist = history_dict(rows)
    metric = next((k for k in hist if not k.startswith("val_") and k != "loss"), None)
    panels = ["loss"] + ([metric] if metric else [])
    epochs = [r["epoch"] + 1 for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    switch = [r["epoch"] + 1 for a, r in zip(rows, rows[1:]) if r["phase"] != a["phase"]]
    for ax, key in zip(axes[0], panels):
        for k, style in ((key, "-o"), (f"val_{key}", "--s")):
            if k in hist:
                ax.plot(epochs, [np.nan if v is None else v for v in hist[k]], style,
                        label=k, markersize=3)
        for s in switch:
            ax.axvline(s - 0.5, color="grey", lw=0.8, ls=":")
            ax.annotate("unfrozen", (s - 0.5, 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8,
                        color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path, title=title, dpi=100)
