"""Benchmark: fine-tuning throughput with the training data streamed from HDF5 (what
`wtransplant finetune` does) against a plain `model.fit(x, y)` on the same data held in
memory, measured in the same run; and peak memory as the data set grows 10x.

The model is the transplanted Keras 2 digits CNN (fixtures/keras2/k2_digits_model.h5) with
a new 10-way head, trainable from layer `features` (the same layers in both cases, one
phase, Adam, batch 64). The data are scikit-learn's digits (fixtures/data/digits.h5)
tiled with a little noise to BASE samples, and to GROW x BASE for the memory test, written
to a temporary HDF5 file (contiguous layout).

Throughput: two processes, one per side, each making ROUNDS fresh `fit` or
`wtransplant.finetune` calls of EPOCHS epochs, take turns epoch by epoch (memory then
streamed, streamed then memory, ...: ABBA), so each timed epoch has the other side's next
to it and load from other work on a shared machine falls on both alike. An epoch's speed
is training samples / its wall time (no validation), the same callback timing both; the
first epoch of each call (it traces the step function) is not timed, nor are WARMUP
rounds of WARMUP_EPOCHS epochs run first (process warm-up: first calls, caches). A
round's ratio is the median of its EPOCHS - 1 epoch pairs' ratios (epoch e streamed over
epoch e in memory, run one after the other); the figure is the median of the rounds'
ratios, and the process CPU time per sample is reported too. Per-epoch speeds on a
shared 2-core machine vary by 2x from one epoch to the next, for both sides alike (an
in-memory vs in-memory run gave pair ratios 0.35-1.96x and 2 of 5 rounds below 0.9x at
4 pairs a round): hence 8 pairs a round.
Memory: each case in a fresh process (1 epoch), peak RSS.
Goals: streamed >= 0.9x in-memory throughput; streamed peak RSS flat as the data grow.

    .venv/bin/python bench/bench_finetune.py [--base 28740] [--grow 10] [--batch-size 64]
        [--epochs 9] [--rounds 5] [--warmup 1] [--warmup-epochs 2]
        [--batch-sizes 32,128,512] [--no-memory] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "fixtures" / "keras2" / "k2_digits_model.h5"
DIGITS = ROOT / "fixtures" / "data" / "digits.h5"
TRAINABLE_FROM = "features"


def make_data(path: Path, n: int, seed: int = 0) -> None:
    """digits' training set tiled to n samples, plus noise, written chunk by chunk."""
    with h5py.File(DIGITS, "r") as f:
        x0, y0 = f["train_set_x"][()], f["train_set_y"][()]
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as g:
        dx = g.create_dataset("train_set_x", (n, *x0.shape[1:]), np.float32)
        dy = g.create_dataset("train_set_y", (n,), np.int64)
        for a in range(0, n, 50000):
            b = min(n, a + 50000)
            idx = np.arange(a, b) % len(x0)
            noise = rng.normal(0, 0.05, (b - a, *x0.shape[1:])).astype(np.float32)
            dx[a:b] = np.clip(x0[idx] + noise, 0, 1)
            dy[a:b] = y0[idx]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------
# children


class Turns:
    """Epoch-level turn-taking with the other child (see child_turns): wait for the
    parent's go before an epoch starts, report when it ends; ``None`` fds: no waiting."""

    def __init__(self, go_fd: int | None = None, done_fd: int | None = None):
        self.go_fd, self.done_fd = go_fd, done_fd

    def wait(self) -> None:
        if self.go_fd is not None and os.read(self.go_fd, 1) != b"g":
            raise SystemExit("the parent went away")

    def done(self, what: bytes = b"e") -> None:
        if self.done_fd is not None:
            os.write(self.done_fd, what)


def make_timer(n: int, turns: Turns | None = None):
    """Samples/s and process CPU time per sample of each epoch, from the epoch's start to
    its end (no validation in this benchmark). Epoch boundaries only: a per-batch hook
    would make Keras wait for every step. The same callback times both children; with
    ``turns`` it waits for its turn before each epoch (Keras creates the epoch's data
    iterator after ``on_epoch_begin``, so nothing is read ahead while it waits)."""
    import keras

    turns = turns or Turns()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.speeds, self.cpu = [], []

        def on_epoch_begin(self, epoch, logs=None):
            turns.wait()
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.speeds.append(n / (time.perf_counter() - self.t))
            self.cpu.append((time.process_time() - self.c) / n * 1e6)
            turns.done()

    return Timer()


def child_stream(data: str, epochs: int, batch_size: int, turns: Turns | None = None
                 ) -> dict:
    import wtransplant

    with h5py.File(data, "r") as f:
        n = len(f["train_set_y"])
    t = make_timer(n, turns)
    wtransplant.finetune(
        str(MODEL), data, new_head=10, trainable_from=TRAINABLE_FROM, head_epochs=0,
        epochs=epochs, batch_size=batch_size, lr=1e-3, checkpoints=False, plot=False,
        progress=False, callbacks=[t])
    return {"speeds": t.speeds, "cpu_us_per_sample": t.cpu}


def child_memory(data: str, epochs: int, batch_size: int, turns: Turns | None = None
                 ) -> dict:
    import keras

    from wtransplant.building.transplanting import rebuild_file
    from wtransplant.finetuning.train import compute_layers, replace_head

    with h5py.File(data, "r") as f:
        x, y = f["train_set_x"][()], f["train_set_y"][()].astype(np.int32)
    original, _ = rebuild_file(MODEL, progress=False)
    model, _head, _ = replace_head(original, 10, "softmax")
    names = [lay.name for lay in compute_layers(model)]
    first = names.index(TRAINABLE_FROM)
    for i, lay in enumerate(compute_layers(model)):
        lay.trainable = i >= first and not isinstance(lay, keras.layers.BatchNormalization)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])

    t = make_timer(len(x), turns)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[t])
    return {"speeds": t.speeds, "cpu_us_per_sample": t.cpu}


def child_turns(mode: str, data: str, epochs: int, batch_size: int, rounds: int,
                go_fd: int, done_fd: int, warmup: int = 0, warmup_epochs: int = 0) -> dict:
    """One side of the paired measurement: ``rounds`` fresh calls (the first ``warmup``
    of ``warmup_epochs`` epochs), each started when the parent says go, each epoch run only
    in this child's turn (see run_paired)."""
    fn = child_memory if mode == "memory" else child_stream
    turns = Turns(go_fd, done_fd)
    out: dict = {"speeds": [], "cpu_us_per_sample": []}
    for r in range(rounds):
        turns.wait()
        res = fn(data, warmup_epochs if r < warmup else epochs, batch_size, turns)
        out["speeds"].append(res["speeds"])
        out["cpu_us_per_sample"].append(res["cpu_us_per_sample"])
        turns.done(b"r")
    return out


def run_paired(data: Path, epochs: int, batch_size: int, rounds: int, warmup: int = 0,
               warmup_epochs: int = 2) -> dict:
    """The two children run side by side and take turns epoch by epoch (memory, streamed,
    then streamed, memory, ...): only one trains at a time, and each timed epoch has the
    other's next to it, seconds apart, so load from other work on the machine falls on
    both alike. Set-up, the first (tracing) epoch and teardown of one child may overlap
    the other's first epoch only, which is not timed. Per round (a fresh call in each
    child): each side's speed is the median of its epochs after the first, and the
    round's ratio the median of the ratios of its epoch pairs (epoch e streamed over
    epoch e in memory, run one after the other). The first ``warmup`` rounds (process
    warm-up: first calls, caches) are run the same way with ``warmup_epochs`` epochs each
    and left out."""
    total = rounds + warmup
    warmup_epochs = max(1, warmup_epochs)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    kids = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ("memory", "stream"):
            go_r, go_w = os.pipe()
            done_r, done_w = os.pipe()
            out, err = open(Path(d) / f"{mode}.out", "w+"), open(Path(d) / f"{mode}.err", "w+")
            cmd = [sys.executable, __file__, "--child", "turns", "--mode", mode, "--data",
                   str(data), "--epochs", str(epochs), "--batch-size", str(batch_size),
                   "--rounds", str(total), "--fds", f"{go_r},{done_w}",
                   "--warmup", str(warmup), "--warmup-epochs", str(warmup_epochs)]
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env,
                                    pass_fds=(go_r, done_w))
            os.close(go_r)
            os.close(done_w)
            kids[mode] = {"proc": proc, "go": go_w, "done": done_r, "out": out, "err": err}

        def expect(mode: str, what: bytes) -> None:
            got = os.read(kids[mode]["done"], 1)
            if got != what:
                kids[mode]["proc"].wait()
                kids[mode]["err"].seek(0)
                raise SystemExit(f"{mode} child failed:\n{kids[mode]['err'].read()[-3000:]}")

        res = {}
        try:
            for r in range(total):
                for k in kids.values():  # both set up at once (not timed)
                    os.write(k["go"], b"g")
                for e in range(warmup_epochs if r < warmup else epochs):
                    for mode in (("memory", "stream") if (r + e) % 2 == 0 else
                                 ("stream", "memory")):
                        os.write(kids[mode]["go"], b"g")
                        expect(mode, b"e")
                for mode in kids:
                    expect(mode, b"r")
            for mode, k in kids.items():
                if k["proc"].wait() != 0:
                    expect(mode, b"?")
                k["out"].seek(0)
                res[mode] = json.loads(k["out"].read().strip().splitlines()[-1])
        finally:
            for k in kids.values():
                if k["proc"].poll() is None:
                    k["proc"].kill()
                    k["proc"].wait()
                for f in ("go", "done"):
                    os.close(k[f])
                k["out"].close()
                k["err"].close()
    out = {"memory": [], "stream": [], "memory_cpu": [], "stream_cpu": [], "ratio": [],
           "epochs": {m: res[m]["speeds"][warmup:] for m in ("memory", "stream")}}
    for r in range(warmup, total):
        pairs = zip(res["stream"]["speeds"][r][1:], res["memory"]["speeds"][r][1:])
        out["ratio"].append(statistics.median(s_ / m for s_, m in pairs))
        for mode in ("memory", "stream"):
            out[mode].append(statistics.median(res[mode]["speeds"][r][1:]))
            out[f"{mode}_cpu"].append(statistics.median(res[mode]["cpu_us_per_sample"][r][1:]))
        print(f"  round {r + 1 - warmup}: streamed {out['stream'][-1]:8.0f}, in-memory "
              f"{out['memory'][-1]:8.0f} samples/s ({out['ratio'][-1]:.2f}x)"
              f"; CPU {out['stream_cpu'][-1]:.1f} vs {out['memory_cpu'][-1]:.1f} us/sample",
              file=sys.stderr, flush=True)
    return out


def run_child(mode: str, data: Path, epochs: int, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--epochs",
           str(epochs), "--batch-size", str(batch_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


# --------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=28740, help="samples (20x digits' train set)")
    ap.add_argument("--grow", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=9,
                    help="per call; the first (tracing) is not timed")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1,
                    help="paired rounds run first and left out (process warm-up)")
    ap.add_argument("--warmup-epochs", type=int, default=2,
                    help="epochs per call in the warm-up rounds")
    ap.add_argument("--batch-sizes", default="",
                    help="also measure throughput at these batch sizes (e.g. 32,128,512), "
                         "one paired round each")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["stream", "memory", "turns"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["stream", "memory"], help=argparse.SUPPRESS)
    ap.add_argument("--fds", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "turns":
        go_fd, done_fd = (int(v) for v in args.fds.split(","))
        out = child_turns(args.mode, args.data, args.epochs, args.batch_size, args.rounds,
                          go_fd, done_fd, args.warmup, args.warmup_epochs)
        print(json.dumps(out))
        return out
    if args.child:
        fn = child_stream if args.child == "stream" else child_memory
        out = fn(args.data, args.epochs, args.batch_size)
        out["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(out))
        return out

    res: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "platform": platform.platform()},
                 "base_samples": args.base, "grow": args.grow, "batch_size": args.batch_size,
                 "epochs": args.epochs, "rounds": args.rounds, "warmup": args.warmup,
                 "warmup_epochs": args.warmup_epochs}
    with tempfile.TemporaryDirectory() as d:
        small, big = Path(d) / "small.h5", Path(d) / "big.h5"
        make_data(small, args.base)
        if not args.no_memory:
            make_data(big, args.base * args.grow)
        res["files_mib"] = {"small": small.stat().st_size / 2**20,
                            "big": big.stat().st_size / 2**20 if big.exists() else 0.0}
        p = run_paired(small, args.epochs, args.batch_size, args.rounds, args.warmup,
                       args.warmup_epochs)
        ratios = p["ratio"]
        thr = {m: statistics.median(p[m]) for m in ("stream", "memory")}
        cpu = {m: statistics.median(p[f"{m}_cpu"]) for m in ("stream", "memory")}
        res["rounds_samples_per_s"] = {"stream": p["stream"], "memory": p["memory"]}
        res["throughput_samples_per_s"] = thr
        res["throughput_ratio_stream_over_memory"] = statistics.median(ratios)
        res["round_ratios"] = ratios
        res["epoch_samples_per_s"] = p["epochs"]
        res["cpu_us_per_sample"] = cpu
        res["cpu_ratio_stream_over_memory"] = cpu["stream"] / cpu["memory"]
        res["load_average_after"] = os.getloadavg()
        if args.batch_sizes:
            res["batch_scaling"] = []
            for bs in (int(b) for b in args.batch_sizes.split(",")):
                q = run_paired(small, args.epochs, bs, 1)
                row = {"batch_size": bs, "stream": q["stream"][0], "memory": q["memory"][0],
                       "ratio": q["ratio"][0]}
                res["batch_scaling"].append(row)
                print(f"  batch {bs:5d}: streamed {row['stream']:.0f}, in-memory "
                      f"{row['memory']:.0f} samples/s ({row['ratio']:.2f}x)", file=sys.stderr)
        mem = {}
        for mode in (() if args.no_memory else ("stream", "memory")):
            for name, path in (("1x", small), (f"{args.grow}x", big)):
                r = run_child(mode, path, 1, args.batch_size)
                mem[f"{mode}_{name}"] = r["peak_rss_mib"]
                print(f"  {mode:6s} {name:>4s} data: peak RSS {r['peak_rss_mib']:.0f} MiB",
                      file=sys.stderr)
        res["peak_rss_mib"] = mem
        g = f"{args.grow}x"
        res["rss_growth_mib"] = {"stream": mem[f"stream_{g}"] - mem["stream_1x"],
                                 "memory": mem[f"memory_{g}"] - mem["memory_1x"]} \
            if mem else {"stream": 0.0, "memory": 0.0}
        res["data_growth_mib"] = max(0.0, res["files_mib"]["big"] - res["files_mib"]["small"])
    ratio = res["throughput_ratio_stream_over_memory"]
    growth = res["rss_growth_mib"]
    res["goals"] = {"throughput_ratio>=0.9": ratio >= 0.9,
                    "stream_memory_flat(<10% of data growth)":
                        growth["stream"] < 0.1 * res["data_growth_mib"] if mem else None}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"throughput (median samples/s, batch {args.batch_size}, {args.base} samples, "
              f"{args.rounds} rounds): HDF5-streamed {thr['stream']:.0f}, in-memory fit "
              f"{thr['memory']:.0f}, median ratio {ratio:.2f}x (goal >= 0.9x; rounds "
              f"{', '.join(f'{q:.2f}' for q in res['round_ratios'])}); CPU time per sample "
              f"{cpu['stream']:.1f} vs {cpu['memory']:.1f} us ({res['cpu_ratio_stream_over_memory']:.2f}x); load "
              f"average {res['load_average_after'][0]:.1f} on {os.cpu_count()} CPUs")
        if not mem:
            return res
        print(f"peak RSS, data {args.base} -> {args.base * args.grow} samples "
              f"(+{res['data_growth_mib']:.0f} MiB on disk): streamed "
              f"{mem['stream_1x']:.0f} -> {mem[f'stream_{g}']:.0f} MiB "
              f"({growth['stream']:+.0f}), in-memory {mem['memory_1x']:.0f} -> "
              f"{mem[f'memory_{g}']:.0f} MiB ({growth['memory']:+.0f})")
    return res


if __name__ == "__main__":
    main()
