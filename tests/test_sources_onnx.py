"""ONNX initializers as a source (issue 16): models exported by ``torch.onnx.export``
(fixtures/onnx/, written by fixtures/make_torch_sources.py with PyTorch 2.13.0+cpu) are
inspected, drafted and rebuilt into Keras models that compute what PyTorch computed; hostile
ONNX files (external data, a location escaping the folder, truncated, garbage) are refused
in one line with exit 2."""

from __future__ import annotations

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
