"""Every command under KERAS_BACKEND=jax and torch: it works, or fails in one line.

The commands run as a user runs them (the installed `wtransplant`, in a subprocess with
KERAS_BACKEND set) on committed fixtures; their stderr must hold no TensorFlow log line
(only wtransplant's own lines, and none at all when a command succeeds quietly).
SavedModel/ONNX/LiteRT files are written by TensorFlow; under another backend wtransplant
writes them from the model saved as `.keras` in a TensorFlow child process (or through
Keras' own jax2tf export), and the written file is checked here against the fixture's
reference outputs, independently of the export's own check.

jax is in the `test` extra, so `make test` runs the jax tests; the torch tests skip
unless PyTorch is installed (`pip install torch==2.13.0`, a CPU wheel).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIX, assert_one_line_error, run_cli

pytestmark = pytest.mark.timeout(900)

SPEC = FIX / "specs" / "k3_mlp.yaml"  # Dense 5 -> 7 (relu) -> 7 -> 2, from a Keras 3 file
IO = FIX / "keras3" / "k3_mlp.io.npz"
#: float32 outputs of a 3-layer MLP, computed by different kernels (XLA, ATen, oneDNN)
ATOL, RTOL = 1e-5, 1e-4


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def backend_env(backend: str) -> dict:
    if not have(backend):
        pytest.skip(f"{backend} is not installed")
    return {"KERAS_BACKEND": backend}


def run_quiet(backend: str, *args) -> subprocess.CompletedProcess:
    """Run a command under ``backend``; it must succeed with nothing on stderr."""
    r = run_cli(*args, env=backend_env(backend))
    assert r.returncode == 0, (backend, args, r.returncode, r.stderr[-3000:])
    assert r.stderr == "", f"stderr under {backend} is not empty:\n{r.stderr[-3000:]}"
    return r


def reference():
    d = np.load(IO)
    return d["x"], d["y"]


def check_against_reference(got) -> None:
    _x, y = reference()
    got = np.asarray(got)
    assert got.shape == y.shape
    np.testing.assert_allclose(got, y, atol=ATOL, rtol=RTOL)


def onnx_outputs(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    return sess.run(None, {inp.name: x.astype(np.float32)})[0]


def finetune_data(path, n: int = 64) -> None:
    """A small regression set for the MLP: x, y (2 targets) and a test_ pair."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y = np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5], axis=1).astype(np.float32)
    np.savez(path, x=x[:48], y=y[:48], test_x=x[48:], test_y=y[48:])


@pytest.mark.slow
def test_jax_rebuild_verify_finetune_and_onnx_export(tmp_path):
    """The CI run of the JAX backend: rebuild, verify, finetune and ONNX export of a
    small transplant, each exit 0 with an empty stderr; the ONNX file (written by
    TensorFlow from the saved .keras) computes the fixture's reference outputs."""
    model = tmp_path / "mlp.keras"
    report = tmp_path / "mlp.report.json"
    r = run_quiet("jax", "rebuild", "--spec", SPEC, "-o", model, "--report", report)
    assert "OK" in r.stdout
    rep = json.loads(report.read_text())
    assert rep["versions"]["keras_backend"] == "jax"

    x_npy, y_npy = tmp_path / "x.npy", tmp_path / "y.npy"
    x, y = reference()
    np.save(x_npy, x)
    np.save(y_npy, y)
    run_quiet("jax", "verify", model, "--inputs", x_npy, "--expected", y_npy)
    # and it fails (exit 1, one line) when the expected outputs are not what it computes
    np.save(y_npy, y + 0.1)
    r = run_cli("verify", model, "--inputs", x_npy, "--expected", y_npy,
                env=backend_env("jax"))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "absl" not in r.stderr and "I0000" not in r.stderr, r.stderr

    data = tmp_path / "data.npz"
    finetune_data(data)
    tuned = tmp_path / "tuned.keras"
    r = run_quiet("jax", "finetune", model, "--data", data, "--epochs", "1", "--batch-size",
                  "16", "--seed", "1", "--no-plot", "--quiet", "--json", "-o", tuned)
    ft = json.loads(r.stdout)
    assert ft["backend"] == "jax"
    assert tuned.is_file() and tuned.stat().st_size > 0

    out = tmp_path / "mlp.onnx"
    r = run_quiet("jax", "export", model, "--format", "onnx", "-o", out)
    assert "written by TensorFlow in a child process" in r.stdout
    check_against_reference(onnx_outputs(out, x))


@pytest.mark.slow
def test_jax_onnx_export_a_converter_cannot_express_is_one_line(tmp_path):
    """A layer tf2onnx cannot convert (Lanczos resize: ScaleAndTranslate), exported under
    JAX: the TensorFlow child's error comes back as one line naming the layer, exit 2,
    and nothing is left in the output folder."""
    code = (
        "import keras\n"
        "inp = keras.Input((8, 8, 3), name='image')\n"
        "x = keras.layers.Conv2D(4, 3, name='conv')(inp)\n"
        "x = keras.layers.Resizing(4, 4, interpolation='lanczos3', name='shrink')(x)\n"
        "x = keras.layers.Dense(2, name='fc')(keras.layers.Flatten(name='flat')(x))\n"
        f"keras.Model(inp, x).save({str(tmp_path / 'lanczos.keras')!r})\n")
    env = backend_env("jax")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env={**os.environ, **env})
    out = tmp_path / "lanczos.onnx"
    r = run_cli("export", tmp_path / "lanczos.keras", "--format", "onnx", "-o", out, env=env)
    assert_one_line_error(r, 2, "'shrink'", "ScaleAndTranslate")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["lanczos.keras"]


@pytest.mark.slow
def test_torch_rebuild_finetune_and_tensorflow_formats(tmp_path):
    """Under PyTorch, SavedModel (was an internal error) and ONNX (was a TensorFlow trace)
    are written by TensorFlow from the saved .keras; both compute the reference outputs
    when reloaded here in their own runtimes."""
    model = tmp_path / "mlp.keras"
    run_quiet("torch", "rebuild", "--spec", SPEC, "-o", model)
    data = tmp_path / "data.npz"
    finetune_data(data)
    r = run_quiet("torch", "finetune", model, "--data", data, "--epochs", "1", "--seed", "1",
                  "--no-plot", "--quiet", "--json", "-o", tmp_path / "tuned.keras")
    assert json.loads(r.stdout)["backend"] == "torch"

    x, _y = reference()
    sm = tmp_path / "mlp_sm"
    r = run_quiet("torch", "export", model, "--format", "savedmodel", "-o", sm)
    assert "Keras backend torch" in r.stdout
    import tensorflow as tf

    obj = tf.saved_model.load(str(sm))
    sig = obj.signatures["serving_default"]
    (name,) = sig.structured_input_signature[1]
    (got,) = sig(**{name: tf.constant(x.astype(np.float32))}).values()
    check_against_reference(got.numpy())

    out = tmp_path / "mlp.onnx"
    run_quiet("torch", "export", model, "--format", "onnx", "-o", out)
    check_against_reference(onnx_outputs(out, x))
    # verify across runtimes, under torch: the ONNX file against the SavedModel
    run_quiet("torch", "verify", out, sm)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_importing_tensorflow_after_wtransplant_prints_nothing(backend):
    """Whoever imports TensorFlow first (Keras lazily under JAX/PyTorch, tf2onnx, us),
    its C++ start-up lines do not reach stderr once wtransplant is imported; an op runs."""
    env = backend_env(backend)
    code = ("import wtransplant, keras, importlib.util\n"
            "importlib.util.find_spec('tensorflow')\n"  # Keras asks like this under torch
            "import tensorflow as tf, tf2onnx\n"
            "print(float(tf.reduce_sum(tf.ones((2, 2)))), keras.backend.backend())\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**e, **env}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["4.0", backend]
    assert r.stderr == "", r.stderr[-3000:]


def test_export_writer_per_backend():
    """TensorFlow writes SavedModel/ONNX/LiteRT in process under TensorFlow, Keras'
    jax2tf export writes SavedModel/LiteRT under JAX, and everything else TensorFlow
    can only write from a .keras in a child process."""
    from wtransplant.exporting.export import FORMATS, writer_for
    from wtransplant.runtimes import get

    for fmt in FORMATS:
        assert writer_for(fmt, "tensorflow") == get(fmt).write
    for fmt in ("keras", "h5"):
        assert writer_for(fmt, "jax") == get(fmt).write
    assert writer_for("onnx", "jax") != get("onnx").write
    for fmt in ("savedmodel", "onnx", "tflite"):
        assert writer_for(fmt, "torch") != get(fmt).write
    for fmt in ("keras", "h5"):
        assert writer_for(fmt, "torch") == get(fmt).write


@pytest.mark.slow
def test_jax_multiprocessing_loads_with_threads_and_says_so(tmp_path):
    """Keras' loader pool forks; a forked JAX process may deadlock (JAX itself warns on
    stderr): under JAX the run loads with threads and says so in one warning line."""
    model = tmp_path / "mlp.keras"
    run_quiet("jax", "rebuild", "--spec", SPEC, "-o", model)
    data = tmp_path / "data.npz"
    finetune_data(data)
    r = run_cli("finetune", model, "--data", data, "--epochs", "1", "--workers", "2",
                "--multiprocessing", "--no-plot", "--quiet", "--json", "-o",
                tmp_path / "tuned.keras", env=backend_env("jax"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wtransplant: warning: multiprocessing "
                                                   "loaders are not used under JAX"), r.stderr
    rep = json.loads(r.stdout)
    assert rep["loader"] == "PyDataset, 2 loader threads"


def test_jax_native_export_falls_back_to_the_tensorflow_child(tmp_path, monkeypatch):
    """Under JAX, SavedModel/LiteRT go through Keras' own (jax2tf) export first; when that
    cannot express the model the TensorFlow child writes the file, and a note says so. A
    LiteRT refusal is final (the child's converter would say the same)."""
    from wtransplant.errors import InputError
    from wtransplant.exporting import export
    from wtransplant.runtimes import get
    from wtransplant.runtimes.litert import LiteRTUnsupported

    calls = []

    def native_fails(src, tmp, prov, **kw):
        (tmp / "half-written").write_text("x")
        raise InputError("jax2tf cannot convert op foo")

    def child(fmt, src, tmp, prov, **kw):
        calls.append((fmt, sorted(p.name for p in tmp.iterdir())))
        return {"notes": ["written by the child"]}

    monkeypatch.setattr(get("savedmodel"), "write", native_fails)
    monkeypatch.setattr(export, "_write_in_tensorflow", child)
    monkeypatch.setattr(export, "keras_backend", lambda: "jax")
    tmp = tmp_path / "sm"
    tmp.mkdir()
    info = export.writer_for("savedmodel", "jax")(None, tmp, {})
    assert calls == [("savedmodel", [])]  # the child starts from an empty folder
    assert info["notes"][0].startswith("Keras' own jax export failed (jax2tf cannot convert")
    assert info["notes"][1] == "written by the child"

    def litert_refuses(src, tmp, prov, **kw):
        raise LiteRTUnsupported("needs Flex ops")

    monkeypatch.setattr(get("tflite"), "write", litert_refuses)
    with pytest.raises(LiteRTUnsupported):
        export.writer_for("tflite", "jax")(None, tmp_path / "m.tflite", {})
    assert len(calls) == 1
