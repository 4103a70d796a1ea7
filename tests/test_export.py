"""`wtransplant export`: every format written, reloaded in its own runtime and compared.

The models come from the committed fixtures through the library (`rebuild(spec)`), are
saved as `.keras` and exported; each exported file is then loaded here again, on its own,
and run on a batch size (7) that neither the export nor its checks used (16 and 3).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIX, assert_one_line_error, run_cli, sha256

pytestmark = pytest.mark.timeout(600)

FORMATS = ("keras", "h5", "savedmodel", "onnx", "tflite")
FILES = {"keras": "model.keras", "h5": "model.h5", "savedmodel": "saved_model",
         "onnx": "model.onnx", "tflite": "model.tflite"}
# (spec, what it exercises); torch_cnn goes through the CLI, the others through the library
MODELS = {"torch_cnn": "CNN with BatchNorm", "torch_gru": "GRU", "torch_lstm": "LSTM",
          "octave_mlp": "MLP"}
TEST_BATCH = 7
REL = 1e-5


def max_rel(a, e) -> float:
    a = np.asarray(a, np.float64)
    e = np.asarray(e, np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    return float(np.max(np.abs(a - e)) / np.max(np.abs(e)))


def keras_outputs(model, xs):
    from wtransplant.runtimes import from_model

    return from_model(model).predict(xs)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock shared by the xdist workers of one run (fcntl: Linux/macOS)."""
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """spec name -> (keras model, .keras file, export folder, export report dict).

    Each fixture model is rebuilt, saved and exported to every format once per test run:
    the first xdist worker that needs it does the work under a lock in the run's shared
    temporary folder, the others load the result."""
    import keras

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # .../pytest-N/popen-gwK -> .../pytest-N, shared by the run
    cache = {}

    def get(name: str):
        if name in cache:
            return cache[name]
        d = shared / f"export-{name}"
        keras_file = d / f"{name}.keras"
        done = d / "export-result.json"
        with _locked(shared / f"export-{name}.lock"):
            if not done.exists():
                _build(name, d, keras_file, done)
        model = keras.saving.load_model(keras_file)
        cache[name] = (model, keras_file, d / "export", json.loads(done.read_text()))
        return cache[name]

    return get


def _build(name: str, d: Path, keras_file: Path, done: Path) -> None:
    from wtransplant.building.transplanting import rebuild

    d.mkdir(exist_ok=True)
    rep = d / f"{name}.report.json"
    rebuild(FIX / "specs" / f"{name}.yaml", output=keras_file, report_path=rep, progress=False)
    out = d / "export"
    if name == "torch_cnn":  # through the CLI, as a user would
        r = run_cli("export", keras_file, "--format", "all", "-o", out, "--provenance", rep,
                    "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
    else:
        from wtransplant.exporting.export import export_model

        report = export_model(keras_file, "all", out, provenance=rep,
                              progress=False).to_dict()
    done.write_text(json.dumps(report))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_format_matches_in_its_own_runtime(exported, name, fmt):
    from wtransplant.runtimes import load_artifact, random_inputs

    model, _, out, report = exported(name)
    res = {r["format"]: r for r in report["results"]}[fmt]
    # the export's own check: two batch sizes, each within float32 rounding
    assert res["verified"] and res["passed"], res
    assert [p["batch"] for p in res["parity"]] == [16, 3]
    assert res["max_rel"] < REL
    assert res["latency"]["median_ms"] > 0 and res["latency"]["keras_median_ms"] > 0
    assert res["size"] > 0
    # an independent check here: reload the file on its own, a third batch size
    art = load_artifact(out / FILES[fmt])
    assert art.runtime == res["runtime"]
    assert art.inputs[0].shape[0] is None, art.inputs  # dynamic batch
    xs = random_inputs(model, TEST_BATCH, seed=123)
    got = art.predict(xs)
    want = keras_outputs(model, xs)
    assert len(got) == len(want) == 1
    assert got[0].shape == (TEST_BATCH,) + tuple(model.outputs[0].shape[1:])
    err = max_rel(got[0], want[0])
    assert err < REL, (name, fmt, err)
    if fmt in ("keras", "h5"):
        assert err == 0.0  # same runtime, same weights: bit-identical
    # the names a user sees are the Keras ones
    assert art.input_names == ["input"]
    assert art.output_names == [model.layers[-1].name]


@pytest.mark.slow
def test_rnn_and_unroll_notes(exported):
    _, _, _, report = exported("torch_gru")
    res = {r["format"]: r for r in report["results"]}
    assert any("unrolled" in n for n in res["tflite"]["notes"])
    assert report["skipped"] == []


@pytest.mark.slow
def test_provenance_in_onnx_metadata_and_sidecars(exported):
    import onnx

    _, keras_file, out, report = exported("torch_cnn")
    src_sha = sha256(FIX / "torch" / "torch_cnn.h5")
    model_sha = sha256(keras_file)
    m = onnx.load(str(out / "model.onnx"))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["wtransplant.source_sha256"] == src_sha
    assert props["wtransplant.model_sha256"] == model_sha
    versions = json.loads(props["wtransplant.versions"])
    for k in ("wtransplant", "keras", "tensorflow", "tf2onnx", "onnxruntime"):
        assert versions[k], k
    spec = json.loads(props["wtransplant.planning.spec"])
    assert [x["name"] for x in spec["model"]["layers"]][:2] == ["conv1", "bn1"]
    for side in ("model.keras.wtransplant.json", "model.h5.wtransplant.json",
                 "model.tflite.wtransplant.json", "saved_model/wtransplant.json"):
        data = json.loads((out / side).read_text())
        assert data["source"]["sha256"] == src_sha, side
        assert data["model"]["sha256"] == model_sha, side
        assert data["spec"] == spec, side
        assert data["export"]["verified"] and data["export"]["max_rel"] < REL, side
    rep = json.loads((out / "export-report.json").read_text())
    assert rep["wtransplant_report"] == "export"
    assert [r["format"] for r in rep["results"]] == list(FORMATS)


@pytest.mark.slow
def test_onnx_file_is_valid_with_readable_names_and_dynamic_batch(exported):
    import onnx

    model, _, out, _ = exported("torch_lstm")
    m = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["head"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert m.opset_import[0].version == 18


@pytest.mark.slow
def test_savedmodel_serving_signature_is_named(exported):
    import tensorflow as tf

    model, _, out, _ = exported("octave_mlp")
    loaded = tf.saved_model.load(str(out / "saved_model"))
    sig = loaded.signatures["serving_default"]
    specs = sig.structured_input_signature[1]
    assert list(specs) == ["input"] and specs["input"].shape.as_list() == [None, 4]
    x = np.random.default_rng(5).standard_normal((TEST_BATCH, 4)).astype("float32")
    y = sig(input=tf.constant(x))
    assert list(y) == ["fc3"]
    assert max_rel(y["fc3"].numpy(), model(x).numpy()) < REL
    assert max_rel(loaded.serve(tf.constant(x))["fc3"].numpy(), model(x).numpy()) < REL


def _gelu_norm_model():
    import keras

    rng = np.random.default_rng(0)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(rng.normal(3.0, 2.0, (256, 8)).astype("float32"))
    inp = keras.Input((8,), name="features")
    x = norm(inp)
    x = keras.layers.Dense(16, name="fc1")(x)
    x = keras.layers.Activation("gelu", name="gelu")(x)  # exact: approximate=False
    x = keras.layers.Dense(16, name="fc2", activation="gelu")(x)  # also exact
    return keras.Model(inp, keras.layers.Dense(3, name="out")(x), name="gelu_norm")


@pytest.mark.slow
def test_exact_gelu_and_normalization_to_onnx(tmp_path):
    import onnx

    from wtransplant.exporting.export import export_model
    from wtransplant.runtimes import load_artifact, random_inputs

    model = _gelu_norm_model()
    norm = model.get_layer("norm")
    assert float(np.abs(np.asarray(norm.mean)).max()) > 1.0  # really adapted
    rep = export_model(model, "onnx", tmp_path / "g.onnx", progress=False)
    assert rep.ok and rep.results[0].max_rel < REL
    m = onnx.load(str(tmp_path / "g.onnx"))
    ops = {n.op_type for n in m.graph.node}
    assert "Erf" in ops  # exact GELU, not the tanh approximation
    assert [i.name for i in m.graph.input] == ["features"]  # no leaked Normalization inputs
    art = load_artifact(tmp_path / "g.onnx")
    xs = [np.random.default_rng(9).normal(3.0, 2.0, (TEST_BATCH, 8)).astype("float32")]
    assert max_rel(art.predict(xs)[0], keras_outputs(model, xs)[0]) < REL
    xs = random_inputs(art, 5, seed=2)
    assert max_rel(art.predict(xs)[0], keras_outputs(model, xs)[0]) < REL


def _multi_io_model():
    import keras

    a = keras.Input((6,), name="features")
    b = keras.Input((4,), dtype="int32", name="tokens")
    e = keras.layers.Flatten(name="flat")(keras.layers.Embedding(13, 3, name="emb")(b))
    h = keras.layers.Concatenate(name="cat")([a, e])
    h = keras.layers.Dense(8, activation="relu", name="hidden")(h)
    y1 = keras.layers.Dense(3, name="scores")(h)
    y2 = keras.layers.Dense(1, activation="sigmoid", name="prob")(h)
    return keras.Model([a, b], [y1, y2], name="multi")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "savedmodel", "tflite"])
def test_multi_input_multi_output(tmp_path, fmt):
    from wtransplant.exporting.export import export_model
    from wtransplant.runtimes import load_artifact, random_inputs

    model = _multi_io_model()
    out = tmp_path / ("m" if fmt == "savedmodel" else f"m.{fmt}")
    rep = export_model(model, fmt, out, progress=False)
    assert rep.ok and rep.results[0].max_rel < REL
    art = load_artifact(out)
    assert sorted(art.input_names) == ["features", "tokens"]
    assert sorted(art.output_names) == ["prob", "scores"]
    xs = random_inputs(model, TEST_BATCH, seed=4)
    assert xs[1].dtype == np.int32 and xs[1].min() >= 0 and xs[1].max() < 13
    got = art.predict({"features": xs[0], "tokens": xs[1]})
    want = keras_outputs(model, xs)
    by = dict(zip(art.output_names, got))
    for name, w in zip(["scores", "prob"], want):
        assert max_rel(by[name], w) < REL, name


@pytest.mark.slow
def test_layer_tf2onnx_cannot_convert_exits_2_naming_it(tmp_path):
    """Resizing with Lanczos interpolation traces to TF's ScaleAndTranslate, which has no
    tf2onnx handler (tf2onnx 1.17): tf2onnx keeps going and writes a broken file; export
    must refuse and name the layer."""
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.Resizing(4, 4, interpolation="lanczos3", name="shrink")(x)
    x = keras.layers.Dense(2, name="fc")(keras.layers.Flatten(name="flat")(x))
    src = tmp_path / "lanczos.keras"
    keras.Model(inp, x).save(src)
    out = tmp_path / "lanczos.onnx"
    r = run_cli("export", src, "--format", "onnx", "-o", out)
    line = assert_one_line_error(r, 2, "'shrink'", "ScaleAndTranslate")
    assert "layer 'conv'" not in line and "layer 'fc'" not in line  # only the culprit
    assert not out.exists()
    assert os.listdir(tmp_path) == ["lanczos.keras"]  # no temporary left behind


@pytest.mark.slow
def test_parity_failure_exits_1_and_writes_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from conftest import fx
    from wtransplant_cli.main import main

    from wtransplant.errors import ParityError
    from wtransplant.exporting.export import export_model
    from wtransplant.runtimes.onnx import OnnxArtifact

    real = OnnxArtifact._run

    def off_by_a_little(self, xs):  # a runtime that computes something slightly else
        return [y * np.float32(1.001) for y in real(self, xs)]

    monkeypatch.setattr(OnnxArtifact, "_run", off_by_a_little)
    model = _multi_io_model()
    with pytest.raises(ParityError) as ei:
        export_model(model, "onnx", tmp_path / "bad.onnx", progress=False)
    assert "was not written" in str(ei.value)
    assert os.listdir(tmp_path) == []

    # through the command line (in-process, so the patch holds): exit 1, and an earlier
    # file of the same name is left as it was, which the message says
    out = tmp_path / "mlp.onnx"
    out.write_bytes(b"earlier")
    r = CliRunner().invoke(main, ["export", str(fx("specs/octave_mlp.yaml")), "--format",
                                  "onnx", "-o", str(out)])
    assert r.exit_code == 1, r.output
    assert "parity failed in onnxruntime" in r.output and "left as it was" in r.output
    assert out.read_bytes() == b"earlier"
    assert sorted(os.listdir(tmp_path)) == ["mlp.onnx"]


def _area_resize_model():
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    out = keras.layers.Resizing(5, 5, interpolation="area", name="shrink")(inp)
    return keras.Model(inp, out, name="area")


@pytest.mark.slow
def test_silently_wrong_conversion_is_caught_exit_1(tmp_path):
    """tf2onnx 1.17 converts ResizeArea (Resizing with interpolation='area', 8 -> 5) without
    complaint into an ONNX graph that computes something else: only the parity check in
    onnxruntime shows it. Nothing may be kept under the final name."""
    src = tmp_path / "area.keras"
    _area_resize_model().save(src)
    out = tmp_path / "area.onnx"
    r = run_cli("export", src, "--format", "onnx", "-o", out)
    assert_one_line_error(r, 1, "parity failed in onnxruntime", "was not written")
    assert "FAILED" in r.stdout  # the report is still printed
    assert sorted(os.listdir(tmp_path)) == ["area.keras"]


@pytest.mark.slow
def test_litert_without_builtin_op_is_refused_or_skipped(tmp_path, monkeypatch):
    import wtransplant.exporting.export as ex
    from wtransplant.errors import InputError
    from wtransplant.runtimes import get
    from wtransplant.runtimes.litert import LiteRTUnsupported

    model = _area_resize_model()  # ResizeArea has no LiteRT built-in
    with pytest.raises(InputError, match="ResizeArea"):
        ex.export_model(model, "tflite", tmp_path / "a.tflite", progress=False)
    assert os.listdir(tmp_path) == []

    # with --format all, a format LiteRT cannot take is skipped and reported; the others
    # are written (the MLP converts everywhere, so the refusal is simulated here)
    def refuse(src, tmp, prov, **_):
        raise LiteRTUnsupported("simulated: op Foo has no LiteRT built-in")

    monkeypatch.setattr(get("tflite"), "write", refuse)
    rep = ex.export_model(FIX / "specs" / "octave_mlp.yaml", "all", tmp_path / "all",
                          progress=False, repeats=3)
    assert [r.format for r in rep.results] == ["keras", "h5", "savedmodel", "onnx"]
    assert rep.skipped == [{"format": "tflite", "reason": "simulated: op Foo has no LiteRT "
                                                          "built-in"}]
    assert not (tmp_path / "all" / "model.tflite").exists()
    saved = json.loads((tmp_path / "all" / "export-report.json").read_text())
    assert saved["skipped"][0]["format"] == "tflite"
    # a spec as MODEL: rebuilt (and checked against its reference data) first
    assert rep.provenance["source"]["sha256"] == sha256(FIX / "octave" / "octave_mlp.h5")


@pytest.mark.slow
def test_keras2_h5_that_keras3_refuses_is_exported(tmp_path):
    from conftest import fx

    from wtransplant.exporting.export import export_model

    rep = export_model(fx("keras2/k2_rnn_model.h5"), "onnx", tmp_path / "k2.onnx",
                       progress=False)
    assert rep.ok and rep.results[0].max_rel < REL
    assert any("rebuilt" in n for n in rep.notes)
    assert rep.provenance["source"]["sha256"] == sha256(fx("keras2/k2_rnn_model.h5"))


@pytest.mark.slow
def test_opset_is_selectable(tmp_path):
    import onnx
    from conftest import fx

    from wtransplant.errors import InputError
    from wtransplant.exporting.export import export_model

    rep = export_model(fx("specs/octave_mlp.yaml"), "onnx", tmp_path / "o13.onnx", opset=13,
                       progress=False)
    assert rep.ok and rep.results[0].opset == 13
    assert onnx.load(str(tmp_path / "o13.onnx")).opset_import[0].version == 13
    with pytest.raises(InputError, match="opset"):
        export_model(fx("specs/octave_mlp.yaml"), "onnx", tmp_path / "o99.onnx", opset=99)


@pytest.mark.parametrize("args,needles", [
    (["missing.keras", "--format", "onnx", "-o", "x.onnx"], ["missing.keras", "no such"]),
    (["{fix}/broken/not_hdf5.h5", "--format", "onnx", "-o", "x.onnx"],
     ["not_hdf5.h5", "not a model"]),
    (["{fix}/torch/torch_cnn.h5", "--format", "onnx", "-o", "x.onnx"],
     ["torch_cnn.h5", "weights only"]),
    (["{fix}/keras3/k3_mlp.keras", "--format", "pdf", "-o", "x.pdf"],
     ["unknown export format 'pdf'"]),
    (["{fix}/keras3/k3_mlp.keras", "--format", "onnx", "-o", "x.txt"], ["x.txt", ".onnx"]),
    (["{fix}/broken/zip_slip.keras", "--format", "onnx", "-o", "x.onnx"],
     ["zip_slip.keras", "escapes"]),
    (["{fix}/broken", "--format", "onnx", "-o", "x.onnx"], ["broken", "not a SavedModel"]),
])
def test_bad_input_one_line_exit_2(tmp_path, args, needles):
    args = [a.replace("{fix}", str(FIX)) for a in args]
    exe = Path(sys.executable).parent / "wtransplant"
    r = subprocess.run([str(exe), "export", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert_one_line_error(r, 2, *needles)
    assert os.listdir(tmp_path) == []


def test_lambda_model_is_refused(tmp_path):
    r = run_cli("export", FIX / "keras2" / "k2_lambda_model.h5", "--format", "keras", "-o",
                tmp_path / "x.keras")
    assert_one_line_error(r, 2, "Lambda")
    assert os.listdir(tmp_path) == []


def test_random_inputs_are_seeded_and_realistic():
    from wtransplant.runtimes import Artifact, TensorInfo, random_inputs

    art = Artifact(None, [TensorInfo("x", (None, 50, 4), "float32"),
                          TensorInfo("ids", (None, None), "int64", high=7),
                          TensorInfo("mask", (None, 3), "bool")], [])
    a = random_inputs(art, 40, seed=1)
    b = random_inputs(art, 40, seed=1)
    c = random_inputs(art, 40, seed=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    x, ids, mask = a
    assert x.shape == (40, 50, 4) and x.dtype == np.float32
    assert 0.8 < x.std() < 1.2 and abs(x.mean()) < 0.1
    assert ids.shape[1] > 1 and ids.min() >= 0 and ids.max() == 6 and ids.dtype == np.int64
    assert mask.dtype == bool and 0 < mask.mean() < 1


def test_a_format_is_one_registry_entry(tmp_path, monkeypatch):
    """A format added to the registry is sniffed, named and planned by export (its own
    suffix, its place in --format all) with no other change."""
    from wtransplant import runtimes
    from wtransplant.errors import InputError
    from wtransplant.exporting.export import plan_outputs

    class Toy(runtimes.Format):
        name, runtime, text = "toy", "toyrt", "a toy model"
        suffixes, all_name = (".toy",), "model.toy"

        def sniff(self, path, head):
            return runtimes.base.BY_CONTENT if head.startswith(b"TOY1") else 0

    monkeypatch.setattr(runtimes, "_FORMATS", runtimes.formats() + (Toy(),))
    f = tmp_path / "m.bin"
    f.write_bytes(b"TOY1" + bytes(60))
    assert runtimes.artifact_kind(f) == "toy"
    spec = FIX / "specs" / "octave_mlp.yaml"
    assert plan_outputs(spec, "toy", tmp_path / "o.toy")[1] == [("toy", tmp_path / "o.toy")]
    with pytest.raises(InputError, match=r"the toy format needs a file name ending in \.toy"):
        plan_outputs(spec, "toy", tmp_path / "o.onnx")
    _, targets = plan_outputs(spec, "all", tmp_path / "all")
    assert [t for t, _ in targets] == ["keras", "h5", "savedmodel", "onnx", "tflite", "toy"]
    assert targets[-1][1] == tmp_path / "all" / "model.toy"
    with pytest.raises(InputError, match="a toy model: export needs a Keras model"):
        plan_outputs(f, "onnx", tmp_path / "o.onnx")


def test_artifact_errors_name_the_file(tmp_path):
    from wtransplant.errors import InputError
    from wtransplant.runtimes import Artifact, TensorInfo, artifact_kind

    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not a SavedModel"):
        artifact_kind(tmp_path / "d")
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="m.onnx: empty file"):
        artifact_kind(tmp_path / "m.onnx")
    art = Artifact(tmp_path / "m.onnx", [TensorInfo("x", (None, 3), "float32")], [])
    with pytest.raises(InputError, match=r"input x takes shape \(None, 3\), got \(2, 4\)"):
        art.check_inputs(np.zeros((2, 4)))
    with pytest.raises(InputError, match="1 input"):
        art.check_inputs([np.zeros((2, 3)), np.zeros((2, 3))])


def test_export_modules_do_not_import_tensorflow():
    """Importing export and the runtime registry, listing its formats and sniffing a file
    start no framework: each runtime imports its own only when it loads or writes."""
    code = ("import sys, wtransplant.exporting.export, wtransplant.runtimes as r; "
            "assert [f.name for f in r.formats()] == ['keras', 'h5', 'spec', 'savedmodel', "
            "'onnx', 'tflite']; "
            f"assert r.artifact_kind({str(FIX / 'specs' / 'octave_mlp.yaml')!r}) == 'spec'; "
            "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnxruntime', 'onnx', "
            "'jax', 'torch') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
