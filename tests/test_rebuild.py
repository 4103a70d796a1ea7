"""wtransplant spec / rebuild on files written by the real programs (PyTorch, GNU Octave,
hdf5storage, tf_keras, Keras 3), checked against those programs' own outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIX, assert_one_line_error, fx, run_cli, sha256

import wtransplant
from wtransplant.errors import InputError, MappingError, ParityError, UnsafeInputError
from wtransplant.planning.spec import load_spec

keras = pytest.importorskip("keras")
from wtransplant.building.transplanting import rebuild, rebuild_file  # noqa: E402

LAYOUT_AXES = {"nchw": (0, 2, 3, 1), "ncl": (0, 2, 1), "ncdhw": (0, 2, 3, 4, 1)}


def reference_io(spec_path: Path):
    """The writer's own inputs/outputs, read with plain NumPy/h5py (independently of
    wtransplant's reference loader), moved to channels-last by hand."""
    raw = load_spec(spec_path)
    v = raw.verify

    def get(ref):
        path, _, key = ref.rpartition(":")
        if path.endswith(".npz"):
            return np.load(spec_path.parent / path)[key]
        with h5py.File(raw.source, "r") as f:  # a dataset of the source file
            if f"{ref}/value" in f:  # Octave variable: column-major
                return f[f"{ref}/value"][()].T
            if "MATLAB_class" in f[ref].attrs:  # MATLAB v7.3 variable: column-major
                return f[ref][()].T
            return f[ref][()]

    x, y = get(v.inputs), get(v.expected)
    if v.input_layout in LAYOUT_AXES:
        x = np.transpose(x, LAYOUT_AXES[v.input_layout])
    if v.output_layout in LAYOUT_AXES:
        y = np.transpose(y, LAYOUT_AXES[v.output_layout])
    return x, y


def rel_err(model, x, y) -> float:
    out = keras.ops.convert_to_numpy(model(x.astype(model.inputs[0].dtype), training=False))
    assert out.shape == y.shape
    return float(np.abs(out - y).max() / np.abs(y).max())


SPECS = ["torch_cnn", "torch_gru", "torch_lstm", "octave_mlp", "matlab73_mlp", "layered_mlp",
         "k3_mlp"]
ZOO = sorted(p.stem for p in (FIX / "specs" / "torch_layers").glob("*.yaml"))


@pytest.mark.parametrize("name", SPECS)
def test_rebuild_matches_writer_outputs(name):
    spec_path = fx(f"specs/{name}.yaml")
    model, report = rebuild(spec_path)
    x, y = reference_io(spec_path)
    assert rel_err(model, x, y) < 1e-5
    assert report.parity.passed and report.parity.max_rel < 1e-5
    assert report.plan.unused == []  # every tensor of the file went somewhere
    n_vars = sum(len(lay.weights) for lay in model.layers)
    assert len(report.plan.assignments) == n_vars


@pytest.mark.parametrize("name", ZOO)
def test_torch_layer_zoo(name):
    """One PyTorch module per layout rule of LAYOUTS.md, against torch's own outputs."""
    spec_path = fx(f"specs/torch_layers/{name}.yaml")
    model, report = rebuild(spec_path)
    x, y = reference_io(spec_path)
    assert rel_err(model, x, y) < 1e-5, name
    assert report.parity.passed


@pytest.mark.slow
def test_mobilenetv2_keras2_weights_into_keras_applications():
    spec_path = fx("specs/k2_mobilenetv2.yaml")
    model, report = rebuild(spec_path)
    x, y = reference_io(spec_path)
    assert rel_err(model, x, y) < 1e-5
    assert report.plan.counts() == {"name": 262}
    # exactness beyond float32 noise: in float64 the rebuilt model lands closer to the
    # writer's float32 outputs than tf_keras itself does between its own CPU kernels (5e-6)
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        m64, _ = rebuild(spec_path)
        assert m64.weights[0].dtype == "float64"
        assert rel_err(m64, x.astype(np.float64), y) < 5e-6
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)


KERAS2_FULL = ["k2_rnn_model", "k2_birnn_model", "k2_cnn_model", "k2_digits_model"]


@pytest.mark.parametrize("name", KERAS2_FULL)
def test_keras2_full_model_rebuilt_without_spec(name, tmp_path):
    model, report = rebuild_file(fx(f"keras2/{name}.h5"), output=tmp_path / "m.keras")
    io = np.load(fx(f"keras2/{name}.io.npz"))
    assert rel_err(model, io["x"], io["y"]) < 1e-5
    assert set(report.plan.counts()) == {"name"}
    again = keras.models.load_model(tmp_path / "m.keras")  # a plain Keras 3 archive
    assert rel_err(again, io["x"], io["y"]) < 1e-5


def test_keras2_gru_file_that_keras3_load_model_refuses(tmp_path):
    """The point of rebuilding Keras 2 files: Keras 3's own loader fails on this one."""
    with pytest.raises(Exception, match="time_major"):
        keras.models.load_model(fx("keras2/k2_rnn_model.h5"))
    r = run_cli("rebuild", fx("keras2/k2_rnn_model.h5"), "-o", tmp_path / "rnn.h5",
                "--inputs", f"{fx('keras2/k2_rnn_model.io.npz')}:x",
                "--expected", f"{fx('keras2/k2_rnn_model.io.npz')}:y", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["parity"]["passed"] and rep["output"]["format"] == "h5"
    assert any("time_major" in n for n in rep["notes"])
    io = np.load(fx("keras2/k2_rnn_model.io.npz"))
    assert rel_err(keras.models.load_model(tmp_path / "rnn.h5"), io["x"], io["y"]) < 1e-5


def test_keras3_archive_rebuilt_without_spec():
    model, report = rebuild_file(fx("keras3/k3_mlp.keras"))
    io = np.load(fx("keras3/k3_mlp.io.npz"))
    # The stored outputs were computed on another CPU: oneDNN picks other kernels for AVX2
    # and AVX-512, so the same weights give results a few float32 ulps apart (Keras' own
    # load_model is 1 ulp off here). 1e-6 relative is about 8 ulps: a wrong transpose,
    # bias or activation is off by orders of magnitude more.
    assert rel_err(model, io["x"], io["y"]) < 1e-6


# --------------------------------------------------------------------------------------
# drafts


@pytest.mark.parametrize("rel", ["layered/layered_mlp.h5", "octave/octave_mlp.h5",
                                 "matlab/matlab73_mlp.mat"])
def test_draft_rebuilds_as_is_with_parity(rel, tmp_path):
    out = tmp_path / "draft.yaml"
    r = run_cli("spec", fx(rel), "-o", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "verify:" in text and "TODO" not in text
    spec = load_spec(out)
    model, report = rebuild(spec)
    assert report.parity is not None and report.parity.passed
    assert report.parity.max_rel < 1e-5


@pytest.mark.parametrize("rel", ["keras2/k2_mlp_weights.h5", "keras2/k2_mobilenetv2_weights.h5",
                                 "keras2/k2_cnn_model.h5"])
def test_draft_for_keras2_files_rebuilds(rel, tmp_path):
    out = tmp_path / "draft.yaml"
    assert run_cli("spec", fx(rel), "-o", out).returncode == 0
    spec = load_spec(out)
    if spec.undecided:  # guesses (activations, input size): refused unless forced
        from wtransplant.building.transplanting import UndecidedError

        with pytest.raises(UndecidedError):
            rebuild(spec)
    model, report = rebuild(spec, force=True)
    assert report.plan.unused == []
    assert report.verified is False  # no reference data: not verified, whatever else
    if "mobilenet" in rel:  # recognised as keras.applications.MobileNetV2(alpha=0.35)
        assert "MobileNetV2" in out.read_text()
        io = np.load(fx("keras2/k2_mobilenetv2_weights.io.npz"))
        # the draft uses the default 224x224 input; the weights fit any size
        spec = load_spec(out)
        spec.model.application["args"]["input_shape"] = [96, 96, 3]
        spec.undecided = [u for u in spec.undecided if u["key"] != "input_shape"]  # decided
        m2, _ = rebuild(spec)
        assert rel_err(m2, io["x"], io["y"]) < 1e-5


def test_draft_marks_what_the_user_must_decide():
    r = run_cli("spec", fx("torch/torch_cnn.h5"))
    assert r.returncode == 0
    text = r.stdout
    spec = load_spec(text=text, base_dir=FIX)  # valid YAML, a valid spec
    assert spec.convention == "torch"
    assert "{undecided: [" in text and "Flatten" in text
    keys = {(u["layer"], u["key"]) for u in spec.undecided}
    assert {("features_0", "padding"), ("features_0", "activation"),
            ("classifier_1", "activation"), (None, "input_shape")} <= keys
    assert "classifier_1/kernel: classifier.1.weight" in text


# --------------------------------------------------------------------------------------
# negative tests: the documented error or a parity failure, never a silent model


def _spec_with(name: str, **changes):
    s = load_spec(fx(f"specs/{name}.yaml"))
    for k, v in changes.items():
        setattr(s, k, v)
    return s


def test_swapped_mapping_with_other_shapes_is_a_mapping_error():
    from wtransplant.planning.spec import WeightRef

    s = _spec_with("layered_mlp")
    s.weights["fc1/kernel"] = WeightRef(["Weights/Layer3"])
    with pytest.raises(MappingError) as e:
        rebuild(s)
    msg = str(e.value)
    assert "fc1/kernel" in msg and "Weights/Layer3" in msg and "(3, 12)" in msg and \
        "(6, 12)" in msg


def test_swapped_mapping_with_same_shapes_fails_parity(tmp_path):
    from wtransplant.planning.spec import WeightRef

    s = _spec_with("torch_cnn")
    s.weights["bn1/moving_mean"] = WeightRef(["features.1.running_var"])
    s.weights["bn1/moving_variance"] = WeightRef(["features.1.running_mean"])
    out = tmp_path / "m.keras"
    with pytest.raises(ParityError):
        rebuild(s, output=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing claims to be good


def test_square_kernel_transposed_the_wrong_way_fails_parity():
    from wtransplant.planning.spec import WeightRef

    s = _spec_with("layered_mlp")
    s.weights["fc2/kernel"] = WeightRef(["Weights/Layer2"], transpose=(0, 1))
    with pytest.raises(ParityError):
        rebuild(s)


def test_keras_default_bn_epsilon_under_torch_warns_and_fails_parity(tmp_path):
    spec = fx("specs/torch_cnn.yaml").read_text().replace("epsilon: 1.0e-5, ", "")
    p = tmp_path / "eps.yaml"
    p.write_text(spec.replace("../", f"{FIX}/"))
    r = run_cli("rebuild", "--spec", p, "--no-save")
    assert r.returncode == 1, r.stderr
    assert "epsilon is Keras' default 0.001" in r.stdout
    assert_one_line_error(r, 1, "parity failed")


def test_missing_tensor_is_exit_2(tmp_path):
    spec = fx("specs/matlab73_mlp.yaml").read_text().replace("net.W2", "net.W9")
    p = tmp_path / "s.yaml"
    p.write_text(spec.replace("../", f"{FIX}/"))
    r = run_cli("rebuild", "--spec", p, "--no-save")
    assert_one_line_error(r, 2, "net.W9", "did you mean")


def test_variable_without_source_is_exit_2(tmp_path):
    spec = fx("specs/octave_mlp.yaml").read_text().replace(
        "    - {class: Dense, name: fc3, units: 3}",
        "    - {class: Dense, name: fc3, units: 3}\n    - {class: Dense, name: extra, units: 2}")
    p = tmp_path / "s.yaml"
    p.write_text(spec.replace("../", f"{FIX}/"))
    r = run_cli("rebuild", "--spec", p, "--no-save")
    assert_one_line_error(r, 2, "extra/kernel", "(3, 2)", "has no source")


def test_square_matrix_under_plain_is_an_error():
    s = _spec_with("layered_mlp")
    del s.weights["fc2/kernel"]
    with pytest.raises(MappingError, match="square"):
        rebuild(s)


def test_source_used_twice_is_an_error_unless_allowed():
    from wtransplant.planning.spec import WeightRef

    s = _spec_with("octave_mlp")
    s.weights = {"fc1/bias": WeightRef(["b2"]), "fc2/bias": WeightRef(["b2"])}
    with pytest.raises(MappingError, match="at most once"):
        rebuild(s)
    s.options.allow_reuse = ["b2"]  # tied weights, said so: allowed, and b1 is left over
    s.verify = None
    _, rep = rebuild(s)
    assert rep.plan.unused == ["b1"]


def test_allow_missing_keeps_keras_initial_values():
    s = _spec_with("octave_mlp")
    s.model.layers.append({"class": "Dense", "name": "extra", "units": 2})
    s.options.allow_missing = ["extra/*"]
    s.verify = None
    _, rep = rebuild(s)
    assert rep.plan.missing_allowed == ["extra/kernel", "extra/bias"]


def test_gru_reset_after_false_from_torch_is_refused():
    s = _spec_with("torch_gru")
    s.model.layers[0]["reset_after"] = False
    with pytest.raises(MappingError, match="reset_after"):
        rebuild(s)


def test_rules_with_back_references():
    from wtransplant.planning.spec import Rule

    s = _spec_with("layered_mlp")
    s.options.match_by_order = False
    s.rules = [Rule(__import__("re").compile(r"^Weights/Layer(\d)$"), r"fc\1/kernel"),
               Rule(__import__("re").compile(r"^Bias/Layer(\d)$"), r"fc\1/bias")]
    _, rep = rebuild(s)
    assert rep.parity.passed
    assert rep.plan.counts() == {"explicit": 1, "rule": 5}


def test_lambda_in_keras2_config_refused_before_keras_sees_it(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("Keras deserialisation was reached")

    monkeypatch.setattr(keras.legacy.saving, "deserialize_keras_object", boom)
    with pytest.raises(UnsafeInputError, match="Lambda"):
        rebuild_file(fx("keras2/k2_lambda_model.h5"))


def test_lambda_in_spec_layers_refused():
    s = _spec_with("octave_mlp")
    s.model.layers.insert(0, {"class": "Lambda", "function": "x"})
    with pytest.raises(UnsafeInputError):
        rebuild(s)


# --------------------------------------------------------------------------------------
# spec validation


@pytest.mark.parametrize("text,needle", [
    ("version: 1\nsource: a.h5\nmodel: {input_shape: [3], layers: [{class: Dense, units: 1}]}"
     "\nweights:\n  d/kernel: {form: x}\n", "5: weights.d/kernel.form: unknown key 'form'"),
    ("version: 1\nsource: a.h5\nmodle: {}\n", "3: modle: unknown key"),
    ("version: 1\nsource: !!python/object/apply:os.system ['echo pwned']\n", "Python tags"),
    ("version: 1\nsource: a.h5\nsource: b.h5\n", "duplicate key 'source'"),
    ("version: 1\nmodel: {input_shape: [3], layers: []}\n", "missing key 'source'"),
    ("version: 1\nsource: a.h5\nconvention: pytorch\n", "unknown convention 'pytorch'"),
    ("version: 1\nsource: a.h5\nmodel: {layers: [{class: Dense, units: 1}]}\n",
     "missing key 'input_shape'"),
    ("version: 1\nsource: a.h5\nweights: {dense: x}\n", "'<layer name>/<variable name>'"),
    ("version: 1\nsource: a.h5\nrules: [{match: '(', to: x/y}]\n", "invalid regex"),
])
def test_spec_validation_names_key_and_line(text, needle):
    with pytest.raises(InputError) as e:
        load_spec(text=text)
    assert needle in str(e.value), str(e.value)


def test_json_spec_is_accepted(tmp_path):
    s = load_spec(fx("specs/octave_mlp.yaml"))
    p = tmp_path / "s.json"
    d = s.to_dict()
    d["verify"] = {"inputs": "X", "expected": "Y"}
    p.write_text(json.dumps(d))
    _, rep = rebuild(p)
    assert rep.parity.passed


# --------------------------------------------------------------------------------------
# report, outputs, input safety, library API


def test_report_has_plan_checksums_parity_versions(tmp_path):
    spec_path = fx("specs/torch_gru.yaml")
    rep_path = tmp_path / "r.json"
    _, report = rebuild(spec_path, output=tmp_path / "m.keras", report_path=rep_path)
    d = json.loads(rep_path.read_text())
    assert d["source"]["sha256"] == sha256(fx("torch/torch_gru.h5"))
    assert {"keras", "tensorflow", "h5py", "wtransplant"} <= set(d["versions"])
    assert d["parity"]["passed"] is True
    ops = {a["target"]: a["ops"] for a in d["plan"]["assignments"]}
    assert any("gate reorder" in o for o in ops["rnn/kernel"])
    with h5py.File(fx("torch/torch_gru.h5"), "r") as f:
        from wtransplant.planning.plan import sha256_array

        raw = sha256_array(f["rnn.weight_ih_l0"][()])
    row = next(c for c in d["checksums"] if c["target"] == "rnn/kernel")
    assert row["source_sha256"] == [raw]
    assert all(c["assigned_matches"] for c in d["checksums"])


def test_inputs_never_modified(tmp_path):
    src_dir = tmp_path / "fx"
    shutil.copytree(FIX / "octave", src_dir)
    spec = fx("specs/octave_mlp.yaml").read_text().replace("../octave/", "")
    (src_dir / "s.yaml").write_text(spec)
    before = sha256(src_dir / "octave_mlp.h5")
    (src_dir / "octave_mlp.h5").chmod(0o444)
    rebuild(src_dir / "s.yaml", output=tmp_path / "out.keras")
    assert sha256(src_dir / "octave_mlp.h5") == before


def test_library_api_is_importable_lazily():
    code = ("import sys, wtransplant\n"
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
            "import wtransplant.planning.plan, wtransplant.planning.spec, wtransplant.planning.draft, wtransplant.planning.layouts\n"
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'layer 1'\n"
            "s = wtransplant.load_spec(sys.argv[1])\n"
            "m, r = wtransplant.rebuild(s)\n"
            "print(r.parity.passed)\n")
    r = subprocess.run([sys.executable, "-c", code, str(fx("specs/octave_mlp.yaml"))],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("True")
    assert callable(wtransplant.rebuild) and callable(wtransplant.load_spec)


def test_cli_rebuild_default_output_and_bad_output_suffix(tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "wtransplant"), "rebuild", "--spec",
                        str(fx("specs/octave_mlp.yaml"))], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "octave_mlp.keras").exists()
    r = run_cli("rebuild", "--spec", fx("specs/octave_mlp.yaml"), "-o", tmp_path / "m.onnx")
    assert_one_line_error(r, 2, "wtransplant export")
