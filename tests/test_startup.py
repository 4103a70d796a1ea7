"""Start-up (issue 15.1): rebuild and verify choose a light Keras backend before Keras
starts (numpy when every layer is one it was checked on, jax otherwise, TensorFlow when
needed), never import TensorFlow for it, say which backend ran and why, and write a
``.keras`` archive that TensorFlow loads and runs to the same outputs. An explicit
KERAS_BACKEND always wins; the library never switches its caller's backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, fx, run_cli

from wtransplant import backend as runtime
from wtransplant.backend import NUMPY_LAYERS, choose_backend

SEEDS = "layered/seeds_mlp"

#: runs the CLI like the installed entry point, then writes which frameworks it imported
WRAPPER = r"""
import atexit, json, os, sys
def _modules():
    from wtransplant.backend import jax_loaded
    with open(os.environ["WT_MODULES_OUT"], "w") as fh:
        json.dump({m: m in sys.modules for m in ("keras", "tensorflow")}
                  | {"jax": jax_loaded()}, fh)
atexit.register(_modules)
from wtransplant_cli.main import main
sys.argv = ["wtransplant"] + sys.argv[1:]
main()
"""


def _auto_env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    e.update(extra)
    return e


def _run_wrapped(tmp_path, *args, env=None):
    out = tmp_path / "modules.json"
    e = _auto_env(WT_MODULES_OUT=str(out), **(env or {}))
    r = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], capture_output=True,
                       text=True, env=e, timeout=600)
    mods = json.loads(out.read_text()) if out.exists() else None
    return r, mods


# --------------------------------------------------------------------------------------
# the rule, without starting Keras


def test_choice_rules(monkeypatch):
    monkeypatch.setattr(runtime, "light_backends", lambda: ["numpy", "jax"])
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert choose_backend("rebuild", ["InputLayer", "Dense"])[0] == "numpy"
    name, why = choose_backend("rebuild", ["Dense", "GroupNormalization"])
    assert name == "jax" and "GroupNormalization" in why
    assert choose_backend("rebuild", None)[0] == "jax"
    assert choose_backend("export", ["Dense"])[0] == "tensorflow"
    assert choose_backend("finetune", ["Dense"])[0] == "tensorflow"
    name, why = choose_backend("verify", ["Dense"], needs_tensorflow="a savedmodel artifact")
    assert (name, why) == ("tensorflow", "a savedmodel artifact")
    monkeypatch.setattr(runtime, "light_backends", lambda: [])
    assert choose_backend("rebuild", ["Dense"])[0] == "tensorflow"
    monkeypatch.setattr(runtime, "light_backends", lambda: ["jax"])  # no scipy
    assert choose_backend("rebuild", ["Dense"])[0] == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # the user's choice always wins
    assert choose_backend("rebuild", ["Dense"]) == ("torch", "KERAS_BACKEND is set")


def test_library_keeps_the_callers_backend(monkeypatch):
    """In a process that already imported Keras, nothing is switched: the choice is the
    running backend, and KERAS_BACKEND is left alone."""
    keras = pytest.importorskip("keras")
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    name, why = choose_backend("rebuild", ["Dense"])
    assert name == keras.backend.backend() and "already imported" in why
    runtime.apply_backend(name, why)
    assert "KERAS_BACKEND" not in os.environ


def test_config_layer_classes_of_a_stored_model():
    from wtransplant.runtimes.keras import keras_archive_config, legacy_h5_config

    assert runtime.config_layer_classes(keras_archive_config(fx("keras3/k3_mlp.keras"))) \
        and set(runtime.config_layer_classes(
            keras_archive_config(fx("keras3/k3_mlp.keras")))) <= {"InputLayer", "Dense"}
    got = runtime.config_layer_classes(legacy_h5_config(fx("keras2/k2_cnn_model.h5")))
    assert "Conv2D" in got and "Dense" in got
    assert runtime.config_layer_classes({"class_name": "Functional", "config": {}}) is None


# --------------------------------------------------------------------------------------
# every layer class on the numpy list is checked on the numpy backend


def test_numpy_list_is_checked_on_fixtures():
    """Every fixture spec (and the Keras 2 full-model files) rebuilt under Keras' numpy
    backend reaches parity (against data where the fixture has it); NUMPY_LAYERS names no
    class these models do not use."""
    script = r"""
import glob, json, os, sys
from pathlib import Path
import keras
from wtransplant.building.transplanting import rebuild, rebuild_file
assert keras.backend.backend() == "numpy"
def walk(m):
    for l in m.layers:
        yield type(l).__name__
        if hasattr(l, "layers"):
            yield from walk(l)
        if hasattr(l, "forward_layer"):
            yield type(l.forward_layer).__name__
out = {}
root = Path(sys.argv[1])
for s in sorted(glob.glob(str(root / "fixtures/specs/**/*.yaml"), recursive=True)):
    m, r = rebuild(s, progress=False, checksums=False)
    out[Path(s).name] = [sorted(set(walk(m))), r.parity.max_abs, r.parity.kind, r.ok]
for f in ["k2_cnn_model", "k2_rnn_model", "k2_birnn_model", "k2_digits_model"]:
    m, r = rebuild_file(root / f"fixtures/keras2/{f}.h5", progress=False)
    out[f] = [sorted(set(walk(m))), r.parity.max_abs, r.parity.kind, r.ok]
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True,
                       text=True, env=_auto_env(KERAS_BACKEND="numpy"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got) >= 20
    used = set()
    for name, (classes, max_abs, kind, ok) in got.items():
        assert ok and max_abs < 1e-5, (name, max_abs, kind)
        used |= set(classes)
    assert sum(kind == "data" for _, _, kind, _ in got.values()) >= 20
    assert NUMPY_LAYERS <= used, sorted(NUMPY_LAYERS - used)


# --------------------------------------------------------------------------------------
# the command line: auto backend, no TensorFlow, TensorFlow loads the result


def test_auto_rebuild_without_tensorflow_loads_under_tensorflow(tmp_path):
    io = fx(SEEDS + ".io.npz")
    spec = tmp_path / "seeds.yaml"
    r = run_cli("spec", fx(SEEDS + ".h5"), "--inputs", f"{io}:x", "--expected", f"{io}:y",
                "-o", spec, "-q", env={})
    assert r.returncode == 0, r.stderr
    out, rep = tmp_path / "seeds.keras", tmp_path / "rebuild.json"
    r, mods = _run_wrapped(tmp_path, "rebuild", "--spec", spec, "-o", out, "--report", rep,
                           "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == ""  # no TensorFlow or JAX log lines
    # no TensorFlow; JAX, which Keras' numpy backend imports for convolutions, waits for
    # its first use (an MLP never uses it: half of Keras' start-up saved)
    assert mods == {"keras": True, "tensorflow": False, "jax": False}, mods
    report = json.loads(rep.read_text())
    assert report["backend"]["backend"] == "numpy", report["backend"]
    assert "numpy" in report["backend"]["why"]
    assert report["versions"]["keras_backend"] == "numpy"
    assert report["verified"] is True and report["parity"]["max_abs"] < 1e-5
    # the archive is backend-independent: TensorFlow loads it and computes the reference
    check = r"""
import sys, numpy as np, keras
assert keras.backend.backend() == "tensorflow"
m = keras.models.load_model(sys.argv[1])
d = np.load(sys.argv[2])
y = np.asarray(m.predict(d["x"], verbose=0))
print(float(np.max(np.abs(y - d["y"]))))
"""
    t = subprocess.run([sys.executable, "-c", check, str(out), str(io)], capture_output=True,
                       text=True, env=_auto_env(KERAS_BACKEND="tensorflow"), timeout=600)
    assert t.returncode == 0, t.stderr[-2000:]
    assert float(t.stdout.strip().splitlines()[-1]) < 1e-5
    # verify of the .keras against data: numpy too, no TensorFlow
    r, mods = _run_wrapped(tmp_path, "verify", out, "--inputs", f"{io}:x", "--expected",
                           f"{io}:y", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert mods["tensorflow"] is False, mods
    v = json.loads(r.stdout)
    assert v["backend"]["backend"] == "numpy" and v["parity"]["passed"]
    assert v["parity"]["max_abs"] < 1e-5


def test_explicit_backend_wins(tmp_path):
    rep = tmp_path / "r.json"
    r, mods = _run_wrapped(tmp_path, "rebuild", "--spec", fx("specs/layered_mlp.yaml"),
                           "--no-save", "--report", rep, "-q",
                           env={"KERAS_BACKEND": "jax"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert mods["tensorflow"] is False
    report = json.loads(rep.read_text())
    assert report["backend"] == {"backend": "jax", "why": "KERAS_BACKEND is set"}
    assert report["verified"] is True


def test_spec_never_starts_keras(tmp_path):
    io = fx(SEEDS + ".io.npz")
    r, mods = _run_wrapped(tmp_path, "spec", fx(SEEDS + ".h5"), "--inputs", f"{io}:x",
                           "--expected", f"{io}:y", "-o", tmp_path / "s.yaml", "-q")
    assert r.returncode == 0, r.stderr
    assert mods == {"keras": False, "tensorflow": False, "jax": False}, mods


def test_light_backend_results_match_tensorflow(tmp_path):
    """The same spec rebuilt under the auto backend and under TensorFlow gives the same
    outputs on the same inputs (float32 tolerance)."""
    outs = {}
    for label, env in (("auto", {}), ("tf", {"KERAS_BACKEND": "tensorflow"})):
        m = tmp_path / f"{label}.keras"
        r = run_cli("rebuild", "--spec", fx("specs/torch_cnn.yaml"), "-o", m, "-q",
                    env=env) if label == "tf" else \
            subprocess.run([sys.executable, "-c", WRAPPER, "rebuild", "--spec",
                            str(fx("specs/torch_cnn.yaml")), "-o", str(m), "-q"],
                           capture_output=True, text=True,
                           env=_auto_env(WT_MODULES_OUT=str(tmp_path / "m.json")))
        assert r.returncode == 0, r.stderr[-2000:]
        outs[label] = m
    # the convolutions loaded JAX on their first use (Keras' numpy backend runs them on it)
    mods = json.loads((tmp_path / "m.json").read_text())
    assert mods == {"keras": True, "tensorflow": False, "jax": True}, mods
    check = r"""
import sys, numpy as np, keras
a = keras.models.load_model(sys.argv[1]); b = keras.models.load_model(sys.argv[2])
x = np.random.default_rng(0).normal(size=(4,) + tuple(a.inputs[0].shape[1:])).astype("float32")
print(float(np.max(np.abs(np.asarray(a.predict(x, verbose=0)) - np.asarray(b.predict(x, verbose=0))))))
"""
    t = subprocess.run([sys.executable, "-c", check, str(outs["auto"]), str(outs["tf"])],
                       capture_output=True, text=True,
                       env=_auto_env(KERAS_BACKEND="tensorflow"), timeout=600)
    assert t.returncode == 0, t.stderr[-2000:]
    assert float(t.stdout.strip().splitlines()[-1]) < 1e-5
    assert np.isfinite(float(t.stdout.strip().splitlines()[-1]))


def test_deferred_jax_loads_on_first_use():
    """defer_jax: Keras' numpy backend starts without JAX and ml_dtypes; the first use of
    JAX (a convolution through keras.ops, an FFT) imports the real modules, every stand-in
    leaves sys.modules, bfloat16 works again; results match NumPy's."""
    script = r"""
import sys, numpy as np
from wtransplant.backend import defer_jax, jax_loaded
assert defer_jax(ml_dtypes=True)
import keras
assert keras.backend.backend() == "numpy" and not jax_loaded()
from wtransplant.backend import _Deferred
assert isinstance(sys.modules["ml_dtypes"], _Deferred)  # Keras started without it
x = np.random.default_rng(0).normal(size=(1, 5, 5, 2)).astype("float32")
k = np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype("float32")
y = keras.ops.convert_to_numpy(keras.ops.conv(x, k, padding="valid"))
assert jax_loaded()
assert not any(isinstance(m, _Deferred) for m in sys.modules.values())
b = keras.ops.convert_to_numpy(keras.ops.cast(np.ones((2,), "float32"), "bfloat16"))
assert str(b.dtype) == "bfloat16" and float(b.astype("float32").sum()) == 2.0
ref = np.zeros((1, 3, 3, 4), np.float32)
for i in range(3):
    for j in range(3):
        ref[0, i, j] = np.tensordot(x[0, i:i + 3, j:j + 3], k, axes=3)
re_, im = keras.ops.fft((np.ones((4,), "float32"), np.zeros((4,), "float32")))
assert abs(float(np.asarray(re_)[0]) - 4.0) < 1e-6
print(float(np.max(np.abs(y - ref))))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=_auto_env(KERAS_BACKEND="numpy"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-4


def test_ml_dtypes_deferred_only_for_plain_specs():
    """NumPy knows 'bfloat16' only once ml_dtypes is loaded: a rebuild defers ml_dtypes
    only for a spec that lists its layers and names none of its types."""
    from wtransplant_cli.main import _plain_dtypes

    from wtransplant.planning.spec import load_spec

    plain = load_spec(fx("specs/layered_mlp.yaml"))
    assert _plain_dtypes(plain, None) is True
    assert _plain_dtypes(plain, fx("keras2/k2_cnn_model.h5")) is False
    d = plain.to_dict()
    d["model"]["layers"][-1]["dtype"] = "bfloat16"
    named = load_spec(data=d, base_dir=fx("specs"))
    assert _plain_dtypes(named, None) is False
