"""wtransplant verify: reference data, other artifacts, the NumPy reference, diagnosis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIX, assert_one_line_error, fx, run_cli
from test_export import exported  # noqa: F401  (the shared module-scoped fixture)

keras = pytest.importorskip("keras")
from wtransplant.checking.verification import verify  # noqa: E402
from wtransplant.errors import InputError, ParityError  # noqa: E402

IO = fx("torch/torch_cnn.io.npz")
FILES = {"keras": "model.keras", "h5": "model.h5", "savedmodel": "saved_model",
         "onnx": "model.onnx"}


@pytest.mark.slow
@pytest.mark.parametrize("a,b", [("keras", "h5"), ("keras", "savedmodel"), ("keras", "onnx"),
                                 ("h5", "onnx"), ("savedmodel", "onnx")])
def test_verify_across_artifacts(exported, a, b):  # noqa: F811
    _, keras_file, out, _ = exported("torch_cnn")
    rep = verify(out / FILES[a], other=out / FILES[b])
    assert rep.ok and rep.parity.max_rel < 1e-5
    assert rep.other["kind"] == b and rep.model["kind"] == a
    assert "seeded random" in rep.inputs


@pytest.mark.slow
def test_verify_cli_keras_against_onnx_and_reference_data(exported, tmp_path):  # noqa: F811
    _, keras_file, out, _ = exported("torch_cnn")
    r = run_cli("verify", keras_file, out / "model.onnx", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["parity"]["passed"] and d["other"]["runtime"] == "onnxruntime"
    # against PyTorch's own outputs, inputs stored NCHW
    r = run_cli("verify", out / "model.onnx", "--inputs", f"{IO}:x", "--expected", f"{IO}:y",
                "--input-layout", "nchw", "--plot", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _model(name="torch_cnn"):
    from wtransplant.building.transplanting import rebuild

    model, _ = rebuild(fx(f"specs/{name}.yaml"))
    return model


def test_reference_data_pass_and_fail(tmp_path):
    model = _model()
    io = np.load(IO)
    x = np.transpose(io["x"], (0, 2, 3, 1))
    rep = verify(model, inputs=x, expected=io["y"])
    assert rep.ok and rep.parity.argmax_agreement == 1.0
    y_bad = io["y"] + 1e-3 * np.abs(io["y"]).max()  # a little off everywhere
    with pytest.raises(ParityError):
        verify(model, inputs=x, expected=y_bad)
    rep = verify(model, inputs=x, expected=y_bad, raise_on_failure=False,
                 report_path=tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["parity"]["passed"] is False and d["parity"]["max_abs"] > 0


def test_verify_against_spec_diagnoses_the_first_bad_layer(tmp_path):
    """A model saved despite a BatchNorm epsilon left at Keras' default: verify --spec
    finds it through the NumPy reference of the PyTorch source."""
    from wtransplant.building.transplanting import rebuild
    from wtransplant.planning.spec import load_spec

    s = load_spec(fx("specs/torch_cnn.yaml"))
    for lay in s.model.layers:
        lay.pop("epsilon", None)
    s.verify = None
    out = tmp_path / "eps.keras"
    with pytest.raises(ParityError):
        rebuild(s, output=out, force=True)
    assert out.exists()  # --force saved it anyway
    r = run_cli("verify", out, "--spec", fx("specs/torch_cnn.yaml"), "--json",
                "--plot", tmp_path / "d.png")
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["diagnosis"]["first_diverging_layer"] == "bn1"
    assert "epsilon" in d["diagnosis"]["cause"]
    assert (tmp_path / "d.png").exists()
    assert_one_line_error(r, 1, "first diverging layer bn1")


def test_verify_with_stored_activations(tmp_path):
    from wtransplant.building.transplanting import rebuild
    from wtransplant.checking.reference import build_reference
    from wtransplant.planning.spec import load_spec
    from wtransplant.reading.h5io import open_source

    spec = load_spec(fx("specs/torch_cnn.yaml"))
    model, report = rebuild(spec)
    x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype(np.float32)
    with open_source(spec.source) as src:
        ref = build_reference(model, report.plan, src, spec_layers=spec.model.layers)
    y, acts = ref.forward(x)
    np.savez(tmp_path / "acts.npz", **{k: v.astype(np.float32) for k, v in acts.items()})
    w = model.get_layer("fc2").get_weights()
    model.get_layer("fc2").set_weights([w[0] * 1.01, w[1]])
    with pytest.raises(ParityError) as e:
        verify(model, inputs=x, expected=y.astype(np.float32),
               activations=tmp_path / "acts.npz")
    d = e.value.report.diagnosis
    assert d.first_bad == "fc2" and d.method == "stored activations"
    # scripts that read the report's diagnosis by its JSON keys still can
    assert d["first_diverging_layer"] == "fc2" and d["method"] == "stored activations"
    assert e.value.report.to_dict()["diagnosis"] == d.to_dict()


def test_diagnosis_that_could_not_run_is_a_note_in_the_report():
    from wtransplant.checking.diagnose import Diagnosis

    d = Diagnosis.unavailable("a onnx artifact has no Keras layers")
    assert not d.ran and d.where() == ""
    assert d.to_dict() == {"note": "no per-layer diagnosis: a onnx artifact has no Keras "
                                   "layers"}


# --------------------------------------------------------------------------------------
# bad input: exit 2, one line


def test_missing_model_file():
    assert_one_line_error(run_cli("verify", "/nonexistent/m.keras", "--inputs", f"{IO}:x",
                                  "--expected", f"{IO}:y"), 2, "/nonexistent/m.keras")


@pytest.mark.slow
def test_inputs_of_the_wrong_shape_and_nan_expected(exported, tmp_path):  # noqa: F811
    _, keras_file, _, _ = exported("torch_cnn")
    # NCHW inputs given to a channels-last model without --input-layout
    r = run_cli("verify", keras_file, "--inputs", f"{IO}:x", "--expected", f"{IO}:y")
    assert_one_line_error(r, 2, "shape")
    io = np.load(IO)
    y = io["y"].copy()
    y[0, 0] = np.nan
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "x.npy", np.transpose(io["x"], (0, 2, 3, 1)))
    r = run_cli("verify", keras_file, "--inputs", tmp_path / "x.npy", "--expected",
                tmp_path / "y.npy")
    assert_one_line_error(r, 2, "NaN")
    np.save(tmp_path / "s.npy", np.array(["a"] * 8))
    r = run_cli("verify", keras_file, "--inputs", tmp_path / "s.npy", "--expected",
                tmp_path / "y.npy")
    assert_one_line_error(r, 2)


def test_verify_needs_something_to_compare_with():
    model = _model()
    with pytest.raises(InputError, match=r"give reference outputs \(expected=\)"):
        verify(model)
    with pytest.raises(InputError, match="need inputs"):
        verify(model, expected=np.zeros((1, 10)))


def test_every_fixture_io_through_verify():
    """verify agrees with rebuild on the writers' own data (NCHW handled by the layout)."""
    from wtransplant.planning.spec import load_spec

    for name in ("torch_gru", "octave_mlp"):
        spec = load_spec(fx(f"specs/{name}.yaml"))
        model = _model(name)
        if name == "torch_gru":
            z = np.load(FIX / "torch/torch_gru.io.npz")
            rep = verify(model, inputs=z["x"], expected=z["y"])
        else:
            rep = verify(model, spec=spec)  # the MATLAB reference of the Octave file
        assert rep.ok, rep.parity.summary()
