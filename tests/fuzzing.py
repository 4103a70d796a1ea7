"""Fuzzing harness for inspect, spec and rebuild over mutated fixture files.

A case is a fixture file plus byte mutations (flips, overwrites, zeroed blocks, truncation,
insertions), biased towards the first kilobytes where HDF5 keeps its superblock and object
headers. Cases run in a long-lived worker process (so TensorFlow starts once), each under a
time limit; the parent also enforces a hard limit and restarts a worker that hangs or dies.

A case passes when every target either succeeds or raises a WTError (a one-line message:
exit code 2 in the CLI), within the time limit, below the memory ceiling, leaving the
(read-only) input byte for byte unchanged. Anything else is a finding.

    python tests/fuzzing.py --cases 5000 --targets inspect,spec   # nightly (make fuzz)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures"

#: fixture -> the spec that rebuilds it (for the rebuild target)
SEEDS = {
    "torch/torch_cnn.h5": "specs/torch_cnn.yaml",
    "torch/torch_gru.h5": "specs/torch_gru.yaml",
    "torch/torch_lstm.h5": "specs/torch_lstm.yaml",
    "octave/octave_mlp.h5": "specs/octave_mlp.yaml",
    "matlab/matlab73_mlp.mat": "specs/matlab73_mlp.yaml",
    "layered/layered_mlp.h5": "specs/layered_mlp.yaml",
    "keras2/k2_mlp_weights.h5": None,
    "keras2/k2_rnn_model.h5": None,
    "keras3/k3_mlp.weights.h5": "specs/k3_mlp.yaml",
    "keras3/k3_mlp.keras": None,
    "broken/attrs.h5": None,
    "broken/references.h5": None,
}
CASE_SECONDS = 15  # per case, all targets (checked in the worker)
HARD_SECONDS = 40  # the parent's limit: a loop inside the HDF5 C library ignores alarms
MAX_RSS_MB = 6000  # the worker's peak resident memory (TensorFlow itself takes ~1 GB)


@dataclass
class Case:
    seed_file: str
    mutations: list  # [kind, position (0..1), bytes or length]

    def to_json(self) -> str:
        return json.dumps({"seed_file": self.seed_file, "mutations": self.mutations})


def mutate(data: bytes, mutations: list) -> bytes:
    b = bytearray(data)
    for kind, pos, arg in mutations:
        if not b:
            break
        i = min(int(pos), len(b) - 1)  # a byte offset chosen by the generator
        if kind == "flip":
            b[i] ^= 1 << (arg % 8)
        elif kind == "set":
            chunk = bytes(arg)
            b[i:i + len(chunk)] = chunk
        elif kind == "zero":
            n = max(1, int(arg))
            b[i:i + n] = bytes(min(n, len(b) - i))
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes(arg)
        elif kind == "dup":
            n = max(1, int(arg))
            b[i:i] = b[i:i + n]
    return bytes(b)


_SIZES: dict[str, int] = {}


def _signature_end(seed: str) -> int:
    """Bytes that merely make the file 'not HDF5' when touched: the 8-byte signature (after
    MATLAB's 512-byte userblock) or a zip's local header."""
    return 520 if seed.endswith(".mat") else (30 if seed.endswith(".keras") else 8)


def mutation_plan(rng: random.Random, size: int, start: int, *, most: int = 6,
                  weights=(35, 20, 15, 10, 10, 10), signature: float = 0.03,
                  head: float = 0.65, cut_after: int = 4, set_len: int = 16,
                  run_len: int = 512) -> list:
    """Up to ``most`` mutations of a ``size``-byte file whose first ``start`` bytes are its
    signature: a ``signature`` share of them there, up to ``head`` in the first 4 KiB
    (superblock, root group, object headers), the rest anywhere; truncations keep at
    least 1/``cut_after`` of the file; runs of set/inserted bytes up to ``set_len``,
    zeroed/duplicated runs up to ``run_len``."""
    muts = []
    for _ in range(rng.randint(1, most)):
        kind = rng.choices(["flip", "set", "zero", "dup", "insert", "truncate"],
                           weights=weights)[0]
        r = rng.random()
        if r < signature:
            pos = rng.randrange(0, start)
        elif r < head:
            pos = rng.randrange(start, max(start + 1, min(size, 4096)))
        else:
            pos = rng.randrange(start, max(start + 1, size))
        if kind == "truncate" and pos < size // cut_after:
            pos = rng.randrange(max(start, size // cut_after), max(size // cut_after + 1, size))
        if kind in ("set", "insert"):
            arg = [rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)])
                   for _ in range(rng.randint(1, set_len))]
        else:
            arg = rng.randint(1, run_len) if kind in ("zero", "dup") else rng.randrange(8)
        muts.append([kind, pos, arg])
    return muts


def random_case(rng: random.Random) -> Case:
    seed = rng.choice(sorted(SEEDS))
    size = _SIZES.setdefault(seed, (FIX / seed).stat().st_size)
    return Case(seed, mutation_plan(rng, size, _signature_end(seed)))


# --------------------------------------------------------------------------------------
# worker side


def _run_targets(path: Path, seed_file: str, targets: list[str]) -> dict:
    from wtransplant.errors import WTError

    out = {}
    for t in targets:
        try:
            if t == "inspect":
                from wtransplant.reading.inspecting import inspect_file

                rep = inspect_file(path, stats=True)
                json.dumps(rep.to_dict(), default=str)
            elif t == "spec":
                from wtransplant.planning.draft import draft_spec
                from wtransplant.planning.spec import load_spec

                d = draft_spec(path, spec_dir=path.parent)
                load_spec(text=d.text, base_dir=path.parent)
            elif t == "rebuild":
                spec_rel = SEEDS.get(seed_file)
                from wtransplant.building.transplanting import rebuild, rebuild_file
                from wtransplant.planning.spec import load_spec

                if spec_rel is None:
                    if seed_file.startswith(("keras2/k2_rnn", "keras3/")) and \
                            seed_file.endswith((".h5", ".keras")):
                        rebuild_file(path, progress=False)
                    else:
                        out[t] = "skipped"
                        continue
                else:
                    spec = load_spec(FIX / spec_rel)
                    spec.source = path
                    spec.verify = None
                    rebuild(spec, progress=False)
            out[t] = "ok"
        except WTError as e:
            msg = str(e)
            out[t] = "error" if "\n" not in msg else f"FINDING multi-line message: {msg!r}"
        except Exception as e:  # a traceback that would escape: a finding
            out[t] = "FINDING " + "".join(traceback.format_exception_only(type(e), e)).strip()
            out[t + "_traceback"] = traceback.format_exc()[-3000:]
    return out


def worker_main(targets: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "rebuild" in targets:  # start TensorFlow once, before the first case
        import keras  # noqa: F401

    def on_alarm(signum, frame):
        raise TimeoutError("case took too long")

    signal.signal(signal.SIGALRM, on_alarm)
    work = Path(tempfile.mkdtemp(prefix="wt-fuzz-"))
    for line in sys.stdin:
        case = json.loads(line)
        data = (FIX / case["seed_file"]).read_bytes()
        path = work / Path(case["seed_file"]).name
        if path.exists():
            path.chmod(0o644)
            path.unlink()
        path.write_bytes(mutate(data, case["mutations"]))
        path.chmod(0o444)  # any attempt to write the input fails loudly
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        t0 = time.perf_counter()
        signal.alarm(CASE_SECONDS)
        try:
            res = _run_targets(path, case["seed_file"], targets)
        except TimeoutError:
            res = {"all": "FINDING timeout"}
        finally:
            signal.alarm(0)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        if hashlib.sha256(path.read_bytes()).hexdigest() != before:
            res["input"] = "FINDING the input file was modified"
        res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if res["rss_mb"] > MAX_RSS_MB:
            res["memory"] = f"FINDING peak RSS {res['rss_mb']:.0f} MB"
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------
# parent side


class Worker:
    def __init__(self, targets: list[str]):
        self.targets = targets
        self.proc = None

    def _start(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tests") + os.pathsep +
                   os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", ",".join(self.targets)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1, env=env)

    def run(self, case: Case, hard_limit: float = HARD_SECONDS) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(case.to_json() + "\n")
        self.proc.stdin.flush()
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=hard_limit):
            self.close(kill=True)
            return cli_check_hang(case, self.targets)
        line = self.proc.stdout.readline()
        if not line:  # the worker died: the HDF5 library crashed in-process
            self.close(kill=True)
            return cli_check_hang(case, self.targets)
        return json.loads(line)

    def close(self, kill: bool = False):
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


def cli_check_hang(case: Case, targets: list[str]) -> dict:
    """A case the library could not finish in-process (the HDF5 C library looping or
    crashing) is acceptable only if the command line, which isolates that work in a child
    process, gives up on it cleanly: exit 2, one line."""
    exe = Path(sys.executable).parent / "wtransplant"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(case.seed_file).name
        path.write_bytes(mutate((FIX / case.seed_file).read_bytes(), case.mutations))
        path.chmod(0o444)
        out = {}
        for t in targets:
            cmd = {"inspect": [str(exe), "inspect", str(path), "--stats", "--timeout", "5"],
                   "spec": [str(exe), "spec", str(path), "--timeout", "5"],
                   "rebuild": [str(exe), "rebuild", str(path), "--no-save", "--timeout",
                               "5"]}[t]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                out[t] = "FINDING the command line hung too"
                continue
            lines = r.stderr.strip().splitlines()
            if r.returncode in (0, 2) and len(lines) <= 1 and "Traceback" not in r.stderr:
                out[t] = "bounded (the HDF5 library loops or crashes on this file; the " \
                         "CLI gave up cleanly)" if r.returncode == 2 else "ok"
            else:
                out[t] = f"FINDING the CLI did not give up cleanly (exit {r.returncode}): " \
                         f"{r.stderr[-300:]!r}"
        return out


def findings(res: dict) -> list[str]:
    return [f"{k}: {v}" for k, v in res.items() if isinstance(v, str) and
            v.startswith("FINDING")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--targets", default="inspect,spec,rebuild")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--rebuild-every", type=int, default=10,
                    help="run the (slower) rebuild target on every Nth case")
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker.split(","))
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    targets = args.targets.split(",")
    fast = Worker([t for t in targets if t != "rebuild"])
    slow = Worker(["rebuild"]) if "rebuild" in targets else None
    counts: dict[str, int] = {}
    slowest = 0.0
    bad = []
    t0 = time.perf_counter()
    for i in range(args.cases):
        case = random_case(rng)
        results = [fast.run(case)] if fast.targets else []
        if slow and i % args.rebuild_every == 0:
            results.append(slow.run(case))
        for res in results:
            slowest = max(slowest, float(res.get("seconds", 0)))
            for k, v in res.items():
                if k in ("inspect", "spec", "rebuild"):
                    key = f"{k}:{'finding' if str(v).startswith('FINDING') else v}"
                    counts[key] = counts.get(key, 0) + 1
            f = findings(res)
            if f:
                bad.append({"case": json.loads(case.to_json()), "findings": f,
                            "traceback": {k: v for k, v in res.items()
                                          if k.endswith("_traceback")}})
        if (i + 1) % 250 == 0:
            print(f"{i + 1} cases, {len(bad)} findings, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
    fast.close()
    if slow:
        slow.close()
    summary = {"seed": seed, "cases": args.cases, "outcomes": counts,
               "findings": len(bad), "seconds": round(time.perf_counter() - t0, 1),
               "slowest_case_s": slowest}
    print(json.dumps(summary, indent=2))
    for b in bad[:20]:
        print(json.dumps(b, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
