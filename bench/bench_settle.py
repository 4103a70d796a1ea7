"""Benchmark: settling a 20-layer chain whose every layer has an activation choice, against
one rebuild of the final spec, and the forward passes it took against trying every
combination.

The file is written here (h5py + numpy, a "numbered layers" layout: Weights/LayerN
out-by-in, Bias/LayerN; widths alternate 24/32 so no matrix is square) with activations
drawn at random from the usual ones per hidden layer and a linear output; numpy computes
64 reference pairs. `draft_spec(..., inputs=, expected=)` settles the 20 choices
(the spec step, no Keras), then `rebuild` of the settled spec builds the Keras model,
assigns, checks parity against the same data (Keras imported beforehand: the rebuild's own
time, not the import's).

    .venv/bin/python bench/bench_settle.py [--layers 20] [--mixed|--uniform] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]

ACTS = {"relu": lambda z: z.clip(0), "tanh": lambda z: __import__("numpy").tanh(z),
        "sigmoid": lambda z: 1 / (1 + __import__("numpy").exp(-z)),
        "linear": lambda z: z}


GAIN = {"relu": 2 ** 0.5, "tanh": 1.2, "linear": 1.0, "sigmoid": 4.0}


def write_chain(folder: Path, n_layers: int, pattern: str, seed: int = 20):
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    widths = [12] + [24 if i % 2 == 0 else 32 for i in range(n_layers - 1)] + [4]
    names = ["relu", "tanh", "linear"]
    hidden = n_layers - 1
    if pattern == "random":
        acts = [str(rng.choice(names)) for _ in range(hidden)]
    elif pattern == "blocks":  # two blocks, as in a feature extractor + a head
        acts = ["relu"] * (hidden // 2) + ["tanh"] * (hidden - hidden // 2)
    else:
        acts = ["tanh"] * hidden
    acts.append("linear")
    x = rng.standard_normal((64, widths[0])).astype(np.float32)
    h = x.astype(np.float64)
    with h5py.File(folder / "chain.h5", "w") as f:
        for i in range(n_layers):
            # variance-keeping weights (orthogonal rows/columns, the activation's gain) so
            # that the outputs still depend on the inputs after 20 layers
            q, _ = np.linalg.qr(rng.standard_normal((max(widths[i:i + 2]),) * 2))
            gain = GAIN[acts[i]] * (np.sqrt(widths[i + 1] / widths[i])
                                    if widths[i + 1] < widths[i] else 1.0)
            w = q[:widths[i + 1], :widths[i]] * gain
            b = rng.standard_normal((widths[i + 1], 1)) * 0.1
            if acts[i] == "sigmoid":
                b -= 0.5 * gain * 0  # centred inputs; the next layer sees a shifted map
            f.create_dataset(f"Weights/Layer{i + 1}", data=w)
            f.create_dataset(f"Bias/Layer{i + 1}", data=b)
            h = ACTS[acts[i]](h @ w.T + b.T)
    np.savez(folder / "chain.io.npz", x=x, y=h.astype(np.float32))
    return acts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--pattern", choices=["blocks", "uniform", "random"], default="blocks",
                    help="hidden activations: relu then tanh blocks (default), every one "
                         "tanh, or drawn at random per layer")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from wtransplant.planning.draft import draft_spec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = write_chain(tmp, args.layers, args.pattern)
        io = tmp / "chain.io.npz"
        t = time.perf_counter()
        d = draft_spec(tmp / "chain.h5", spec_dir=tmp, inputs=f"{io}:x", expected=f"{io}:y")
        settle_s = time.perf_counter() - t
        (tmp / "chain.yaml").write_text(d.text)
        got = [c["value"] for c in sorted(d.choices, key=lambda c: c["where"])
               if c["kind"] == "activation"]
        by_layer = {int(c["where"].split("[")[1].split("]")[0]): c for c in d.choices}
        got = [by_layer[i]["value"] for i in range(args.layers)]
        statuses = [by_layer[i]["status"] for i in range(args.layers)]
        import keras  # noqa: F401  (imported before timing: the rebuild's own cost)

        from wtransplant.building.transplanting import rebuild
        from wtransplant.errors import ParityError

        force = bool(d.spec.undecided)  # unsettled choices: rebuild them unverified

        def once():
            try:
                return rebuild(tmp / "chain.yaml", progress=False, checksums=False,
                               force=force)[1]
            except ParityError as e:  # unsettled choices, forced: parity fails, as it must
                return e.report

        once()  # warm-up
        t = time.perf_counter()
        rep = once()
        rebuild_s = time.perf_counter() - t
    r = d.report
    res = {"task": f"settle a {args.layers}-layer chain, every layer an activation choice "
                   f"({args.pattern} hidden activations, "
                   f"{len(d.choices[0]['candidates'])} candidates each)",
           "baseline": "one rebuild of the settled spec (build, assign, parity)",
           "baseline_s": rebuild_s, "ours_s": settle_s, "ratio": settle_s / rebuild_s,
           "forward_evaluations": r["forward_evaluations"],
           "layer_evaluations": r["layer_evaluations"],
           "exhaustive_evaluations": r["exhaustive_evaluations"],
           "settled": r["settled"], "choices": len(d.choices),
           "correct": sum(a == b for a, b in zip(got, truth)),
           "statuses": {s: statuses.count(s) for s in set(statuses)},
           "rebuild_verified": bool(rep.verified),
           "parity_max_abs": rep.parity.max_abs if rep.parity else float("nan"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['task']}:\n  settle {settle_s:.2f} s, one rebuild {rebuild_s:.2f} s, "
              f"ratio {res['ratio']:.2f}x (goal < 10x)\n  forward passes "
              f"{res['forward_evaluations']} ({res['layer_evaluations']} layer evaluations) vs "
              f"{res['exhaustive_evaluations']:.3g} for every combination\n  settled "
              f"{res['settled']}/{res['choices']}, {res['correct']} equal to the truth; "
              f"rebuild verified: {res['rebuild_verified']} (max abs "
              f"{res['parity_max_abs']:.2g})")
    return res


if __name__ == "__main__":
    main()
