"""ONNX initializers as a source (issue 16): models exported by ``torch.onnx.export``
(fixtures/onnx/, written by fixtures/make_torch_sources.py with PyTorch 2.13.0+cpu) are
inspected, drafted and rebuilt into Keras models that compute what PyTorch computed; hostile
ONNX files (external data, a location escaping the folder, truncated, garbage) are refused
in one line with exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, cli_json, fx, run_cli

from wtransplant.errors import InputError, UnsafeInputError
from wtransplant.reading.sources import open_source
from wtransplant.reading.sources.onnxfile import OnnxSource, is_onnx_head, node_scope

# --------------------------------------------------------------------------------------
# reading


def test_open_lists_initializers_as_onnx_gives_them():
    with open_source(fx("onnx/cnn_bn.onnx")) as src:
        assert isinstance(src, OnnxSource) and src.container == "onnx"
        ts = {t.path: (t.shape, t.dtype) for t in src.tensors()}
        assert ts["/features.0.weight"] == ((8, 3, 3, 3), "float32")
        assert ts["/features.1.running_var"] == ((8,), "float32")
        assert ts["/classifier.1.weight"] == ((32, 256), "float32")  # Gemm transB=1: (out,in)
        assert len(ts) == 16
        info = src.info()
        assert info.format == "onnx" and info.writer == "pytorch 2.13.0"
        var = src.read("/features.1.running_var")
        # running stats from train-mode passes on inputs of scale 4: far from 1
        assert var.dtype == np.float32 and var.shape == (8,) and var.min() > 2.0


def test_generated_names_get_the_writers_view():
    from wtransplant.reading.loaded import load_source

    with open_source(fx("onnx/gru.onnx")) as src:
        lo = load_source(src)
        by = {t.name: t for t in lo.tensors}
        assert by["rnn.W"].path == "/onnx::GRU_108" and by["rnn.W"].shape == (1, 24, 6)
        assert by["rnn.R"].shape == (1, 24, 8) and by["rnn.B"].shape == (1, 48)
        assert by["head.weight"].path == "/head.weight"
        assert lo.format == "onnx" and lo.detection.convention == "onnx"
        assert any("'onnx::GRU_108' -> 'rnn.W'" in e for e in lo.detection.evidence)
        w = lo.array("rnn.W")
        assert w.shape == (1, 24, 6) and np.isfinite(w).all() and np.abs(w).max() > 0.05


def test_node_scope():
    assert node_scope("/features/features.0/Conv") == "features.0"
    assert node_scope("/rnn/GRU") == "rnn"
    assert node_scope("Conv_0") == ""


def test_sniff_by_content_not_suffix(tmp_path):
    head = fx("onnx/gru.onnx").read_bytes()[:64]
    assert is_onnx_head(head)
    assert not is_onnx_head(fx("torch/torch_cnn.h5").read_bytes()[:64])
    # an ONNX model under another name is still read as ONNX
    p = tmp_path / "model.bin"
    shutil.copy(fx("onnx/gru.onnx"), p)
    with open_source(p) as src:
        assert src.container == "onnx"


def test_inspect_json_schema():
    d = cli_json("inspect", fx("onnx/gru.onnx"))
    assert d["format"] == "onnx" and d["writer"] == "pytorch 2.13.0"
    paths = {t["path"]: t for t in d["tensors"]}
    assert paths["/onnx::GRU_109"]["shape"] == [1, 24, 8]
    assert paths["/onnx::GRU_109"]["dtype"] == "float32"


# --------------------------------------------------------------------------------------
# hostile files: one line, exit 2


@pytest.mark.parametrize("rel,needle", [
    ("onnx/ext_data.onnx", "external file 'ext_data.onnx.data': refused"),
    ("onnx/ext_escape.onnx", "external file '../../../etc/passwd': refused"),
    ("onnx/truncated.onnx", "not a valid ONNX model"),
    ("onnx/garbage.onnx", "not a valid ONNX model"),
])
@pytest.mark.parametrize("cmd", ["inspect", "spec"])
def test_hostile_onnx_one_line_exit_2(rel, needle, cmd):
    r = run_cli(cmd, fx(rel))
    assert_one_line_error(r, 2, needle, fx(rel).name)


def test_external_data_read_only_when_asked_and_inside_the_folder(tmp_path):
    with open_source(fx("onnx/ext_data.onnx"), follow_links=True) as src:
        w = src.read("/weight")
        assert w.shape == (3, 4) and w.dtype == np.float32 and np.abs(w).max() > 0.01
    with pytest.raises(UnsafeInputError, match="outside the model's folder"):
        open_source(fx("onnx/ext_escape.onnx"), follow_links=True)
    # a side file shorter than the declared tensors: refused before reading
    for name in ("ext_data.onnx", "ext_data.onnx.data"):
        shutil.copy(fx("onnx/" + name), tmp_path / name)
    data = tmp_path / "ext_data.onnx.data"
    data.write_bytes(data.read_bytes()[:40])
    with pytest.raises(UnsafeInputError, match="does not fit"):
        open_source(tmp_path / "ext_data.onnx", follow_links=True)


def test_declared_shape_larger_than_held_bytes_is_refused(tmp_path):
    import onnx

    m = onnx.load(str(fx("onnx/gru.onnx")))
    m.graph.initializer[0].dims[0] = 1 << 40  # claims ~100 TB
    p = tmp_path / "bomb.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(UnsafeInputError, match="declares shape"):
        open_source(p)
    assert_one_line_error(run_cli("inspect", p), 2, "declares shape")


def test_onnx_imported_only_for_onnx_files():
    # in-process (the CLI's inspect runs its work in a guarded child process)
    code = (
        "import sys\n"
        "from wtransplant.reading.inspecting import inspect_file\n"
        "r = inspect_file(sys.argv[1]).to_dict()\n"
        "assert r['tensors'], r\n"
        "bad = [m for m in ('tensorflow', 'keras', 'torch', 'jax', 'onnx') if m in sys.modules]\n"
        "print(','.join(bad) or 'none')\n"
    )
    for rel, want in (("torch/torch_cnn.h5", "none"), ("onnx/cnn_bn.onnx", "onnx")):
        r = subprocess.run([sys.executable, "-c", code, str(fx(rel))], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == want, rel


def test_errors_are_input_errors():
    with pytest.raises(InputError):
        open_source(fx("onnx/garbage.onnx"))
    with pytest.raises(InputError):
        open_source(fx("onnx/truncated.onnx"))


# --------------------------------------------------------------------------------------
# spec and rebuild: the Keras model computes what PyTorch computed


def _torch_io(stem):
    io = np.load(fx(f"onnx/{stem}.io.npz"))
    return io["x"], io["y"]


def _model_err(model, x, y) -> float:
    import keras

    out = keras.ops.convert_to_numpy(model(x.astype("float32"), training=False))
    assert out.shape == y.shape
    return float(np.abs(out - y).max())


@pytest.mark.parametrize("stem,cls,roles", [
    ("gru", "GRU", ("W", "R", "B")),
    ("lstm", "LSTM", ("W", "R", "B")),
])
def test_rnn_draft_from_data_rebuilds_to_torch_outputs(stem, cls, roles, tmp_path):
    """spec drafts the ONNX GRU/LSTM from its generated initializers (by the consuming
    node), settles the rest on torch's data, and the draft rebuilds as is."""
    pytest.importorskip("keras")
    import yaml

    from wtransplant.building.transplanting import rebuild
    from wtransplant.planning.draft import draft_spec

    io = fx(f"onnx/{stem}.io.npz")
    d = draft_spec(fx(f"onnx/{stem}.onnx"), spec_dir=tmp_path, inputs=f"{io}:x",
                   expected=[f"{io}:y"])
    assert d.rebuildable, d.text
    doc = yaml.safe_load(d.text)
    assert doc["convention"] == "onnx"
    assert doc["model"]["layers"][0]["class"] == cls
    assert [doc["weights"][f"rnn/{v}"] for v in ("kernel", "recurrent_kernel", "bias")] == \
        [f"rnn.{r}" for r in roles]
    spec = tmp_path / f"{stem}.yaml"
    spec.write_text(d.text)
    model, report = rebuild(spec)
    x, y = _torch_io(stem)
    assert _model_err(model, x, y) < 1e-5
    assert report.parity.passed and report.parity.max_abs < 1e-5
    ops = [o.describe() for a in report.plan.assignments if a.target.key == "rnn/kernel"
           for o in a.ops]
    if cls == "LSTM":
        assert any("i,o,f,c (ONNX) -> i,f,c,o (Keras)" in o for o in ops), ops
    else:
        assert not any("gate reorder" in o for o in ops), ops  # z,r,h kept


def test_cnn_with_batchnorm_rebuilds_to_torch_outputs():
    pytest.importorskip("keras")
    from wtransplant.building.transplanting import rebuild

    model, report = rebuild(fx("specs/onnx_cnn_bn.yaml"))
    x, y = _torch_io("cnn_bn")
    assert _model_err(model, np.transpose(x, (0, 2, 3, 1)), y) < 1e-5
    assert report.parity.passed and report.parity.max_abs < 1e-5
    got = {a.target.key: a.sources[0].name for a in report.plan.assignments}
    assert got["bn1/moving_variance"] == "features.1.running_var"
    assert got["fc1/kernel"] == "classifier.1.weight"


@pytest.mark.parametrize("stem", ["gru", "cnn_bn"])
def test_numpy_reference_under_onnx_without_data(stem, tmp_path):
    """Without reference data, parity is checked against the NumPy reference of ONNX's
    semantics (step_onnx for the GRU: ONNX gates converted to PyTorch's equations)."""
    pytest.importorskip("keras")
    import yaml

    from wtransplant.building.transplanting import rebuild
    from wtransplant.planning.draft import draft_spec

    if stem == "cnn_bn":
        doc = yaml.safe_load(fx("specs/onnx_cnn_bn.yaml").read_text())
    else:
        io = fx("onnx/gru.io.npz")
        doc = yaml.safe_load(draft_spec(fx("onnx/gru.onnx"), spec_dir=tmp_path,
                                        inputs=f"{io}:x", expected=[f"{io}:y"]).text)
    doc.pop("verify", None)
    doc["source"] = str(fx(f"onnx/{stem}.onnx"))
    spec = tmp_path / "noverify.yaml"
    spec.write_text(yaml.safe_dump(doc))
    model, report = rebuild(spec)
    assert report.parity.passed and report.parity.max_abs < 1e-5
    assert "numpy reference" in report.parity.method and "onnx" in report.parity.method


def test_cli_inspect_spec_rebuild_gru(tmp_path):
    pytest.importorskip("keras")
    io = fx("onnx/gru.io.npz")
    r = run_cli("inspect", fx("onnx/gru.onnx"))
    assert r.returncode == 0, r.stderr
    assert "onnx::GRU_108" in r.stdout and "rnn.W" in r.stdout and "pytorch 2.13.0" in r.stdout
    spec = tmp_path / "gru.yaml"
    r = run_cli("spec", fx("onnx/gru.onnx"), "--inputs", f"{io}:x", "--expected", f"{io}:y",
                "-o", spec)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "gru.keras"
    r = run_cli("rebuild", "--spec", spec, "-o", out, "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["parity"]["passed"] and rep["parity"]["max_abs"] < 1e-5
    assert out.exists()


def test_cnn_draft_read_off_the_graph_rebuilds_as_is(tmp_path):
    """The ONNX graph says what a state_dict cannot (padding, pooling, activations, the
    BatchNorm epsilon): the draft of cnn_bn.onnx has nothing undecided and rebuilds to
    torch's outputs."""
    pytest.importorskip("keras")
    import yaml

    from wtransplant.building.transplanting import rebuild
    from wtransplant.planning.draft import draft_spec

    io = fx("onnx/cnn_bn.io.npz")
    d = draft_spec(fx("onnx/cnn_bn.onnx"), spec_dir=tmp_path, inputs=f"{io}:x",
                   expected=[f"{io}:y"], input_layout="nchw")
    assert d.rebuildable and "undecided" not in d.text, d.text
    doc = yaml.safe_load(d.text)
    classes = [lay["class"] for lay in doc["model"]["layers"]]
    assert classes == ["Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D"] * 2 + \
        ["Flatten", "Dense", "ReLU", "Dense"]
    bn = doc["model"]["layers"][1]
    assert bn["epsilon"] == pytest.approx(1e-5, rel=1e-6)
    assert doc["model"]["layers"][0]["padding"] == "same"
    assert doc["weights"]["features_1/moving_variance"] == "features.1.running_var"
    spec = tmp_path / "cnn.yaml"
    spec.write_text(d.text)
    model, report = rebuild(spec)
    x, y = _torch_io("cnn_bn")
    assert _model_err(model, np.transpose(x, (0, 2, 3, 1)), y) < 1e-5
    assert report.parity.passed and report.parity.max_abs < 1e-5
