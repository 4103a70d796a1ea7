"""Issue 13: graph specs, PReLU, PyTorch padding and ceil-mode pooling, several inputs and
outputs. Fixtures are written by PyTorch itself (fixtures/make_torch_graphs.py); these
tests never import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from wtransplant.errors import InputError, MappingError

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "fixtures" / "specs"
TORCH = ROOT / "fixtures" / "torch"
CLI = [str(Path(sys.executable).parent / "wtransplant")]

GRAPH_SPECS = ["g_resnet", "g_pools", "g_prelu", "g_permute", "g_two_io", "mtcnn_pnet",
               "mtcnn_rnet", "mtcnn_onet"]


def _outputs(parity):
    return parity.outputs if parity.outputs else [parity]


@pytest.mark.parametrize("name", GRAPH_SPECS)
def test_graph_fixture_matches_pytorch(name, tmp_path):
    """Each graph spec rebuilds from PyTorch's state_dict and every output matches what
    PyTorch computed to < 1e-5 relative error (max |a - e| / max |e|)."""
    from wtransplant import rebuild

    out = tmp_path / f"{name}.keras"
    model, report = rebuild(SPECS / f"{name}.yaml", output=out)
    assert report.parity is not None and report.parity.passed, report.parity.summary()
    assert report.parity.method.startswith("reference data")
    n_expected = len(np.load(TORCH / f"{name}.io.npz").files) - len(model.inputs)
    parts = _outputs(report.parity)
    assert len(parts) == len(model.outputs) == n_expected
    for p in parts:
        assert p.max_rel < 1e-5, (name, p.max_rel)
    assert out.exists()


def test_mtcnn_names_and_heads():
    """Model inputs and outputs carry the spec's names; ONet has its three heads in
    PyTorch's order; the report says which pooling layers are wtransplant's own."""
    from wtransplant import rebuild

    model, report = rebuild(SPECS / "mtcnn_onet.yaml")
    assert report.model["input_names"] == ["image"]
    assert report.model["output_names"] == ["dense6_2", "dense6_3", "softmax6_1"]
    assert [list(s)[1:] for s in report.model["outputs"]] == [[4], [10], [2]]
    text = " ".join(report.notes)
    assert "pool1" in text and "TorchPooling" in text  # 46 -> ceil differs from floor
    assert "pool2: ceil_mode gives the same windows as floor" in text


def test_two_inputs_names(tmp_path):
    from wtransplant import rebuild

    model, report = rebuild(SPECS / "g_two_io.yaml")
    assert [t.name for t in model.inputs] == ["image", "extra"]
    assert list(model.output_names) == ["fc_cls", "fc_box"]


@pytest.mark.parametrize("first", ["wtransplant, keras", "keras, wtransplant"])
def test_saved_torchpooling_loads_after_import(first, tmp_path):
    """A .keras with wtransplant's TorchPooling loads in a fresh Python that did `import
    wtransplant` (before or after keras) and computes PyTorch's numbers; `import
    wtransplant` alone does not import keras."""
    from wtransplant import rebuild

    out = tmp_path / "pools.keras"
    rebuild(SPECS / "g_pools.yaml", output=out)
    code = (
        "import sys\n"
        + ("import wtransplant\nassert 'keras' not in sys.modules\n"
           if first.startswith("wtransplant") else "import keras\n")
        + f"import {first}, numpy as np\n"
        f"m = keras.models.load_model({str(out)!r})\n"
        f"z = np.load({str(TORCH / 'g_pools.io.npz')!r})\n"
        "ys = m(np.transpose(z['x'], (0, 2, 3, 1)))\n"
        "err = max(float(np.abs(np.asarray(y) - np.transpose(z[f'y{i}'], (0, 2, 3, 1))).max())"
        " for i, y in enumerate(ys))\n"
        "print('ERR', err, sorted({type(l).__name__ for l in m.layers}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ERR"))
    assert float(line.split()[1]) < 1e-5
    assert "TorchPooling" in line


def test_permute_without_mirror_would_fail(tmp_path):
    """Without the Permute (plain Flatten) the automatic C,H,W permutation applies and the
    W,H,C-ordered PyTorch rows no longer match: the rule is what makes RNet pass."""
    import yaml

    from wtransplant import rebuild
    from wtransplant.errors import ParityError

    d = yaml.safe_load((SPECS / "mtcnn_rnet.yaml").read_text())
    d["model"]["layers"] = [x for x in d["model"]["layers"] if x["class"] != "Permute"]
    d["source"] = str(TORCH / "mtcnn_rnet.h5")
    d["verify"]["inputs"] = str(TORCH / "mtcnn_rnet.io.npz") + ":x"
    d["verify"]["expected"] = [str(TORCH / "mtcnn_rnet.io.npz") + f":y{i}" for i in (0, 1)]
    p = tmp_path / "rnet_noperm.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ParityError):
        rebuild(p)


# ------------------------------------------------------------------------------------
# spec errors name the file, the line and the item


def _spec(tmp_path, layers: str, extra: str = "", inputs="input_shape: [8, 8, 3]"):
    src = tmp_path / "w.h5"
    if not src.exists():
        with h5py.File(src, "w") as f:
            f["dummy"] = np.zeros(3, np.float32)
    p = tmp_path / "s.yaml"
    p.write_text(f"version: 1\nsource: w.h5\nconvention: torch\nmodel:\n  {inputs}\n"
                 f"  layers:\n{layers}{extra}")
    return p


def test_unknown_name_names_file_line_item(tmp_path):
    from wtransplant.planning.spec import load_spec

    p = _spec(tmp_path, "    - {class: Conv2D, name: c1, filters: 2, kernel_size: 3}\n"
                        "    - {class: Conv2D, name: c2, filters: 2, kernel_size: 3, "
                        "inputs: nope}\n")
    with pytest.raises(InputError) as e:
        load_spec(p)
    msg = str(e.value)
    assert "s.yaml:8" in msg and "model.layers[1]" in msg and "'nope'" in msg


def test_cycle_is_an_error(tmp_path):
    from wtransplant.planning.spec import load_spec

    p = _spec(tmp_path, "    - {class: ReLU, name: a, inputs: b}\n"
                        "    - {class: ReLU, name: b, inputs: a}\n", "  outputs: [b]\n")
    with pytest.raises(InputError, match=r"s\.yaml:\d+: .*cycle: "):
        load_spec(p)


def test_merge_needs_a_list_and_outputs_must_exist(tmp_path):
    from wtransplant.planning.spec import load_spec

    p = _spec(tmp_path, "    - {class: ReLU, name: a}\n    - {class: Add, name: s}\n")
    with pytest.raises(InputError, match=r"s\.yaml:8: model\.layers\[1\].*Add 's' merges"):
        load_spec(p)
    p = _spec(tmp_path, "    - {class: ReLU, name: a}\n", "  outputs: [zz]\n")
    with pytest.raises(InputError, match=r"s\.yaml:\d+: model\.outputs\[0\]: output 'zz'"):
        load_spec(p)


def test_shape_mismatch_names_file_line_item(tmp_path):
    from wtransplant.building.keras_model import build_model
    from wtransplant.planning.spec import load_spec

    p = _spec(tmp_path, "    - {class: Conv2D, name: c1, filters: 2, kernel_size: 3}\n"
                        "    - {class: Conv2D, name: c2, filters: 4, kernel_size: 1, "
                        "inputs: input}\n"
                        "    - {class: Add, name: s, inputs: [c1, c2]}\n")
    spec = load_spec(p)
    with pytest.raises(InputError) as e:
        build_model(spec.model)
    msg = str(e.value)
    assert "s.yaml:9: model.layers[2] (Add 's')" in msg and "(None, 6, 6, 2)" in msg


def test_stack_without_inputs_keeps_its_meaning(tmp_path):
    """A plain list is still a stack: the old fixture spec rebuilds and passes."""
    from wtransplant import rebuild

    model, report = rebuild(SPECS / "torch_cnn.yaml")
    assert report.parity.passed
    assert [t.name for t in model.inputs] == ["input"]


# ------------------------------------------------------------------------------------
# flatten order from the graph


def test_flatten_undecidable_asks_for_flatten(tmp_path):
    """A Dense after a Concatenate of two flattened maps: the row order cannot be derived
    from the graph; the error asks for `flatten:` and the entry settles it."""
    from wtransplant import rebuild

    rng = np.random.default_rng(0)
    src = tmp_path / "w.h5"
    with h5py.File(src, "w") as f:
        f["c.weight"] = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
        f["c.bias"] = rng.standard_normal(2).astype(np.float32)
        f["fc.weight"] = rng.standard_normal((4, 2 * 36 * 2)).astype(np.float32)
        f["fc.bias"] = rng.standard_normal(4).astype(np.float32)
    layers = ("    - {class: Conv2D, name: c, filters: 2, kernel_size: 3}\n"
              "    - {class: Flatten, name: f1}\n"
              "    - {class: Flatten, name: f2, inputs: c}\n"
              "    - {class: Concatenate, name: cat, inputs: [f1, f2]}\n"
              "    - {class: Dense, name: fc, units: 4}\n")
    p = tmp_path / "s.yaml"
    p.write_text("version: 1\nsource: w.h5\nconvention: torch\nmodel:\n"
                 "  input_shape: [8, 8, 3]\n  layers:\n" + layers +
                 "verify: {reference: none}\n")
    with pytest.raises(MappingError, match=r"fc/kernel: the flatten order .*flatten: chw"):
        rebuild(p)
    p.write_text(p.read_text() + "weights:\n  fc/kernel: {from: fc.weight, flatten: none}\n")
    model, report = rebuild(p)
    assert report.plan.convention == "torch"


# ------------------------------------------------------------------------------------
# PReLU under every convention


@pytest.mark.parametrize("conv,src_shape,target,expect", [
    ("torch", (6,), (1, 1, 6), lambda a: a.reshape(1, 1, 6)),
    ("torch", (1,), (1, 1, 6), lambda a: np.full((1, 1, 6), a[0])),
    ("torch", (6,), (4, 4, 6), lambda a: np.broadcast_to(a, (4, 4, 6))),
    ("torch", (7,), (7,), lambda a: a),
    ("matlab", (1, 1, 6), (1, 1, 6), lambda a: a),
    ("matlab", (6, 1), (1, 1, 6), lambda a: a.reshape(1, 1, 6)),
    ("plain", (6,), (1, 1, 6), lambda a: a.reshape(1, 1, 6)),
    ("keras", (1, 1, 6), (1, 1, 6), lambda a: a),
])
def test_prelu_layout(conv, src_shape, target, expect):
    from wtransplant.planning.layouts import TargetLayer, TargetVar
    from wtransplant.planning.layouts.layers import layout_for
    from wtransplant.planning.layouts.ops import apply

    tv = TargetVar("p/alpha", "p", "alpha", target)
    layer = TargetLayer("p", "PReLU", {"shared_axes": [1, 2]}, [tv])
    ops = layout_for("PReLU").recipe("alpha", conv, [src_shape], layer, tv)
    a = np.random.default_rng(1).standard_normal(src_shape)
    got = apply(ops, [a])
    np.testing.assert_array_equal(got, expect(a))


def test_prelu_wrong_size_is_an_error():
    from wtransplant.planning.layouts import TargetLayer, TargetVar
    from wtransplant.planning.layouts.layers import layout_for

    tv = TargetVar("p/alpha", "p", "alpha", (1, 1, 6))
    layer = TargetLayer("p", "PReLU", {}, [tv])
    with pytest.raises(MappingError, match="PReLU slopes"):
        layout_for("PReLU").recipe("alpha", "torch", [(5,)], layer, tv)


# ------------------------------------------------------------------------------------
# PyTorch pooling geometry (the numbers PyTorch computes are pinned by g_pools)


def test_pool_out_rule():
    from wtransplant.planning.torchgeom import pool_out

    assert pool_out(10, 3, 3, 0, False) == 3 and pool_out(10, 3, 3, 0, True) == 4
    assert pool_out(23, 2, 2, 0, True) == 12 and pool_out(23, 2, 2, 0, False) == 11
    # the last window may not start in the right padding
    assert pool_out(5, 2, 2, 1, True) == 3
    assert pool_out(4, 3, 2, 1, True) == 3  # starts at -1, 1, 3 (3 is inside)


@pytest.mark.parametrize("nd", [1, 3])
def test_torchpooling_1d_3d_against_numpy(nd):
    """TorchPooling in 1-D and 3-D agrees with a direct NumPy evaluation of PyTorch's
    definition (windows clipped at the input + padding, divisor per count_include_pad)."""
    import keras

    from wtransplant.layers_custom import TorchPooling
    from wtransplant.planning.torchgeom import pool_out

    rng = np.random.default_rng(nd)
    spatial = (9,) * nd
    x = rng.standard_normal((2, *spatial, 3)).astype(np.float32)
    for mode, cip in (("max", True), ("avg", True), ("avg", False)):
        lay = TorchPooling(mode, (3,) * nd, (2,) * nd, (1,) * nd, ceil_mode=True,
                           count_include_pad=cip)
        got = keras.ops.convert_to_numpy(lay(x))
        n_out = pool_out(9, 3, 2, 1, True)
        want = np.empty((2,) + (n_out,) * nd + (3,))
        for idx in np.ndindex(*(n_out,) * nd):
            sl, cnt_pad = [], 1
            for o in idx:
                st = o * 2 - 1
                en = min(st + 3, 9 + 1)
                cnt_pad *= en - st
                sl.append(slice(max(st, 0), min(en, 9)))
            win = x[(slice(None), *sl, slice(None))]
            axes = tuple(range(1, nd + 1))
            if mode == "max":
                want[(slice(None), *idx, slice(None))] = win.max(axis=axes)
            else:
                div = cnt_pad if cip else np.prod([s.stop - s.start for s in sl])
                want[(slice(None), *idx, slice(None))] = win.sum(axis=axes) / div
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------
# several inputs/outputs: verify and the spec's expected agree


def test_verify_cli_named_inputs_and_several_expected(tmp_path):
    from wtransplant import rebuild

    out = tmp_path / "two.keras"
    rebuild(SPECS / "g_two_io.yaml", output=out)
    z = np.load(TORCH / "g_two_io.io.npz")
    np.save(tmp_path / "image.npy", np.transpose(z["image"], (0, 2, 3, 1)))
    np.save(tmp_path / "extra.npy", z["extra"])
    np.save(tmp_path / "y0.npy", z["y0"])
    np.save(tmp_path / "y1.npy", z["y1"])
    rep = tmp_path / "r.json"
    args = CLI + ["verify", str(out), "--inputs", f"image={tmp_path / 'image.npy'}",
                  "--inputs", f"extra={tmp_path / 'extra.npy'}",
                  "--expected", str(tmp_path / "y0.npy"), "--expected",
                  str(tmp_path / "y1.npy"), "--report", str(rep)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(rep.read_text())
    assert d["parity"]["passed"] and len(d["parity"]["outputs"]) == 2
    # the spec's `expected: [...]` (rebuild) gives the same per-output figures
    _, rr = rebuild(SPECS / "g_two_io.yaml")
    for got, want in zip(d["parity"]["outputs"], rr.parity.outputs):
        assert abs(got["max_abs"] - want.max_abs) <= 1e-7
    # swapped expected files: exit 1 (every output is compared, in outputs order)
    args2 = [a for a in args]
    i0, i1 = args2.index(str(tmp_path / "y0.npy")), args2.index(str(tmp_path / "y1.npy"))
    args2[i0], args2[i1] = args2[i1], args2[i0]
    r = subprocess.run(args2, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 2 and "shape" in r.stderr, r.stderr[-2000:]


def test_rebuild_cli_named_inputs_and_several_expected(tmp_path):
    # rebuild's --inputs/--expected override the spec's verify the same way verify takes them
    z = np.load(TORCH / "g_two_io.io.npz")
    np.save(tmp_path / "image.npy", z["image"])  # NCHW, as the spec's input_layout says
    np.save(tmp_path / "extra.npy", z["extra"])
    np.save(tmp_path / "y0.npy", z["y0"])
    np.save(tmp_path / "y1.npy", z["y1"])
    args = CLI + ["rebuild", "--spec", str(SPECS / "g_two_io.yaml"), "--no-save", "--json",
                  "--inputs", "image=image.npy", "--inputs", "extra=extra.npy",
                  "--expected", "y0.npy", "--expected", "y1.npy"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["parity"]["kind"] == "data" and len(d["parity"]["outputs"]) == 2
    assert d["spec"]["verify"]["expected"] == [str(tmp_path / "y0.npy"),
                                               str(tmp_path / "y1.npy")]
    swapped = args[:-4] + ["--expected", "y1.npy", "--expected", "y0.npy"]
    r = subprocess.run(swapped, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run(args[:-8] + ["--inputs", "image.npy", "--inputs", "extra.npy",
                                    "--expected", "y0.npy"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 2 and "NAME=FILE" in r.stderr, r.stderr[-2000:]


# ------------------------------------------------------------------------------------
# export: every output checked; ONNX output names are the Keras output names


@pytest.mark.parametrize("fmt", ["onnx", "savedmodel"])
def test_export_two_io_checks_every_output(fmt, tmp_path):
    from wtransplant import rebuild
    from wtransplant.exporting.export import export_model
    from wtransplant.runtimes import load_artifact

    model, _ = rebuild(SPECS / "g_two_io.yaml")
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m_sm")
    rep = export_model(model, fmt, out, progress=False)
    assert rep.ok
    assert all(len(p.outputs) == 2 for p in rep.results[0].parity)
    art = load_artifact(out)
    if fmt == "onnx":
        assert art.output_names == ["fc_cls", "fc_box"]
        assert sorted(art.input_names) == ["extra", "image"]
    z = np.load(TORCH / "g_two_io.io.npz")
    ys = art.predict({"image": np.transpose(z["image"], (0, 2, 3, 1)), "extra": z["extra"]})
    by = dict(zip(art.output_names, ys)) if fmt == "onnx" else {"fc_cls": ys[0],
                                                                "fc_box": ys[1]}
    for name, want in (("fc_cls", z["y0"]), ("fc_box", z["y1"])):
        assert np.abs(by[name] - want).max() / np.abs(want).max() < 1e-5


# ------------------------------------------------------------------------------------
# the NumPy reference covers graphs


@pytest.mark.parametrize("name", GRAPH_SPECS)
def test_numpy_reference_matches_pytorch(name):
    """The NumPy reference (the source's own semantics, no Keras) evaluates every graph
    fixture -- merges, PReLU, Permute, torch padding, ceil mode, several inputs/outputs --
    and agrees with PyTorch's outputs."""
    from wtransplant import rebuild
    from wtransplant.building.transplanting import load_reference
    from wtransplant.checking.reference import build_reference
    from wtransplant.planning.spec import load_spec
    from wtransplant.reading.h5io import open_source
    from wtransplant.reading.inspecting import load_source

    spec = load_spec(SPECS / f"{name}.yaml")
    model, rep = rebuild(spec)
    with open_source(spec.source) as src:
        ref = build_reference(model, rep.plan, src, spec_layers=spec.model.layers)
        x, y = load_reference(spec, src, load_source(src), model)
    got, acts = ref.forward(x)
    got = got if isinstance(got, list) else [got]
    y = y if isinstance(y, list) else [y]
    assert len(got) == len(y) == len(model.outputs)
    for g, e in zip(got, y):
        assert g.shape == e.shape
        assert np.abs(g - e).max() / np.abs(e).max() < 1e-5


def test_graph_without_data_checked_by_numpy_reference(tmp_path):
    import yaml

    from wtransplant import rebuild

    d = yaml.safe_load((SPECS / "g_two_io.yaml").read_text())
    d["source"] = str(TORCH / "g_two_io.h5")
    del d["verify"]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    model, report = rebuild(p)
    assert report.parity.method.startswith("numpy reference")
    assert report.parity.passed and len(report.parity.outputs) == 2


def test_diagnosis_names_first_diverging_layer_in_a_branch(tmp_path):
    """A BatchNorm epsilon left at Keras' default on the downsample branch: parity fails
    and the diagnosis names that branch layer and the cause."""
    import yaml

    from wtransplant import rebuild
    from wtransplant.errors import ParityError

    d = yaml.safe_load((SPECS / "g_resnet.yaml").read_text())
    for item in d["model"]["layers"]:
        if item.get("name") == "layer1.downsample.1":
            del item["epsilon"]
    d["source"] = str(TORCH / "g_resnet.h5")
    d["verify"]["inputs"] = str(TORCH / "g_resnet.io.npz") + ":x"
    d["verify"]["expected"] = [str(TORCH / "g_resnet.io.npz") + ":y0"]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ParityError) as e:
        rebuild(p)
    diag = e.value.report.diagnosis
    assert diag["first_diverging_layer"] == "layer1.downsample.1", diag
    assert "epsilon" in (diag.get("cause") or "")


@pytest.mark.slow
def test_resnet18_graph_spec_matches_pytorch():
    """The torchvision-style ResNet-18 written by bench/make_resnet18.py (PyTorch; ~45 MiB,
    not committed): rebuilt from its graph spec, < 1e-5 relative error."""
    d = ROOT / "bench" / "resnet18"
    if not (d / "resnet18.h5").exists():
        pytest.skip("run bench/make_resnet18.py with PyTorch first (not committed: 45 MiB)")
    from wtransplant import rebuild

    model, report = rebuild(d / "resnet18.yaml")
    assert report.parity.passed and report.parity.max_rel < 1e-5
    assert report.model["parameters"] == 11_689_512 + 9_600  # weights + BN running stats


# ------------------------------------------------------------------------------------
# inspect of a Keras 2 full model shows the file's own layer graph


def test_inspect_keras2_model_shows_model_config():
    from conftest import run_cli

    r = run_cli("inspect", ROOT / "fixtures/keras2/k2_cnn_model.h5", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    arch = d["architecture"]
    assert arch["from"] == "model_config"
    rows = {x["name"]: x for x in arch["layers"]}
    assert rows["conv2d"]["class"] == "Conv2D" and rows["conv2d"]["parameters"] == 3 * 3 * 3 * 8 + 8
    assert rows["dense"]["inbound"] == ["dropout"] and arch["outputs"] == ["dense"]
    assert not d["hints"]["notes"]  # no guessing from shapes next to the stated graph
    # output shapes worked out from the config (as Keras computes them), without Keras
    import keras

    model = keras.models.load_model(ROOT / "fixtures/keras2/k2_cnn_model.h5", compile=False,
                                    safe_mode=True)
    for layer in model.layers:
        assert rows[layer.name]["output_shape"] == list(layer.output.shape[1:]), layer.name
    r = run_cli("inspect", ROOT / "fixtures/keras2/k2_cnn_model.h5")
    assert "Architecture from the file's model_config" in r.stdout
    assert "(None, 6, 6, 8)" in r.stdout  # the pooled map, as model.summary() shows it


def test_config_output_shapes_of_other_layer_kinds():
    from wtransplant.planning.shapes import output_shape as out

    assert out("SeparableConv2D", {"filters": 16, "kernel_size": [3, 3], "padding": "same"},
               [(48, 48, 8)]) == (48, 48, 16)
    assert out("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 2},
               [(10, 10, 4)]) == (8, 8, 8)
    assert out("ZeroPadding2D", {"padding": [[1, 1], [2, 2]]}, [(10, 10, 4)]) == (12, 14, 4)
    assert out("Concatenate", {"axis": -1}, [(6, 6, 7), (6, 6, 3)]) == (6, 6, 10)
    assert out("Add", {}, [(6, 6, 7), (6, 6, 7)]) == (6, 6, 7)
    assert out("Reshape", {"target_shape": [-1, 4]}, [(6, 6, 8)]) == (72, 4)
    assert out("Permute", {"dims": [2, 1]}, [(3, 5)]) == (5, 3)
    assert out("Bidirectional", {"layer": {"class_name": "GRU", "config": {"units": 5}}},
               [(None, 3)]) == (10,)
    # what cannot be told is None, never a guess
    assert out("Conv2D", {"filters": 4, "kernel_size": 3, "data_format": "channels_first"},
               [(3, 8, 8)]) is None
    assert out("Lambda", {}, [(4,)]) is None and out("Dense", {"units": 3}, [None]) is None


def test_kerasconfig_functional_graph_and_escaping():
    """A Keras 2 functional config (inbound_nodes as nested lists): branches and merges are
    read from the config; names are data."""
    from wtransplant.reading.kerasconfig import summarize

    cfg = {"class_name": "Functional", "config": {
        "layers": [
            {"class_name": "InputLayer", "name": "in",
             "config": {"name": "in", "batch_input_shape": [None, 8, 8, 3]},
             "inbound_nodes": []},
            {"class_name": "SeparableConv2D", "name": "sep",
             "config": {"name": "sep", "filters": 4, "kernel_size": [3, 3]},
             "inbound_nodes": [[["in", 0, 0, {}]]]},
            {"class_name": "Conv2D", "name": "res\x1b[31m",
             "config": {"name": "res\x1b[31m", "filters": 4, "kernel_size": [1, 1]},
             "inbound_nodes": [[["in", 0, 0, {}]]]},
            {"class_name": "Add", "name": "add", "config": {"name": "add"},
             "inbound_nodes": [[["sep", 0, 0, {}], ["res\x1b[31m", 0, 0, {}]]]}],
        "output_layers": [["add", 0, 0]]}}
    arch = summarize(json.dumps(cfg))
    rows = {x["name"]: x for x in arch["layers"]}
    assert rows["add"]["inbound"] == ["sep", "res\x1b[31m"]
    assert rows["sep"]["class"] == "SeparableConv2D" and rows["in"]["args"]["shape"] == [8, 8, 3]
    assert arch["outputs"] == ["add"]
    sys.path.insert(0, str(ROOT))
    from cli.render import escape_text

    assert "\x1b" not in escape_text("res\x1b[31m")


# ------------------------------------------------------------------------------------
# drafts see graphs


def test_draft_mtcnn_prelu_and_parallel_heads(tmp_path):
    """The torch draft of RNet proposes the PReLUs (each after its layer, per channel on
    maps, per feature after a Linear) and the two heads as branches with two outputs."""
    import yaml

    from wtransplant import draft_spec
    from wtransplant.planning.spec import load_spec

    d = draft_spec(TORCH / "mtcnn_rnet.h5", spec_dir=tmp_path)
    data = yaml.safe_load(d.text)
    items = {x["name"]: x for x in data["model"]["layers"]}
    names = [x["name"] for x in data["model"]["layers"]]
    assert names.index("prelu1") == names.index("conv1") + 1
    assert names.index("prelu4") == names.index("dense4") + 1
    assert items["prelu1"]["shared_axes"] == [1, 2] and "shared_axes" not in items["prelu4"]
    assert items["dense5_2"]["inputs"] == "prelu4"
    assert data["model"]["outputs"] == ["dense5_1", "dense5_2"]
    assert {"prelu4/alpha": "prelu4.weight"}.items() <= data["weights"].items()
    p = tmp_path / "draft.yaml"
    p.write_text(d.text)
    spec = load_spec(p)  # a valid graph spec
    assert spec.model.outputs == ["dense5_1", "dense5_2"]


def test_draft_pnet_rebuilds_and_reference_agrees(tmp_path):
    from wtransplant import draft_spec, rebuild

    d = draft_spec(TORCH / "mtcnn_pnet.h5", spec_dir=tmp_path)
    p = tmp_path / "draft.yaml"
    p.write_text(d.text)
    model, report = rebuild(p, force=True)  # the draft's guesses (padding...) forced
    assert len(model.outputs) == 2
    assert report.parity.method.startswith("numpy reference") and report.parity.passed
    assert report.to_dict()["verified"] is False


def test_parity_plot_one_panel_per_output(tmp_path):
    import struct

    from wtransplant.checking.plots import parity_plot

    rng = np.random.default_rng(0)
    ys = [rng.standard_normal((4, 3)), rng.standard_normal((4, 2))]

    def width(p):
        return struct.unpack(">I", Path(p).read_bytes()[16:20])[0]

    one = parity_plot(tmp_path / "one.png", actual=ys[0], expected=ys[0])
    two = parity_plot(tmp_path / "two.png", actual=ys, expected=ys)
    assert abs(width(two) / width(one) - 2.0) < 0.1


@pytest.mark.parametrize("nd", [1, 3])
def test_torch_padding_conv_and_pool_1d_3d_against_reference(nd, tmp_path):
    """Integer padding on Conv1D/Conv3D (stride 2) and on Max/AveragePooling1D/3D with
    ceil mode: the rebuilt Keras model agrees with the NumPy reference of PyTorch's
    semantics (independent code: zero padding, -inf max padding, PyTorch's divisors)."""
    from wtransplant import rebuild

    rng = np.random.default_rng(nd)
    k = 3
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["c1.weight"] = rng.standard_normal((4, 2) + (k,) * nd).astype(np.float32) / 3
        f["c1.bias"] = rng.standard_normal(4).astype(np.float32)
        f["c2.weight"] = rng.standard_normal((3, 4) + (k,) * nd).astype(np.float32) / 3
        f["c2.bias"] = rng.standard_normal(3).astype(np.float32)
    size = 11 if nd == 1 else 7
    shape = [size] * nd + [2]
    spec = f"""version: 1
source: w.h5
convention: torch
model:
  input_shape: {shape}
  layers:
    - {{class: Conv{nd}D, name: c1, filters: 4, kernel_size: {k}, strides: 2, padding: 1}}
    - {{class: MaxPooling{nd}D, name: mp, pool_size: 2, strides: 2, padding: 1, ceil_mode: true}}
    - {{class: Conv{nd}D, name: c2, filters: 3, kernel_size: {k}, padding: 1, inputs: c1}}
    - {{class: AveragePooling{nd}D, name: ap, pool_size: 3, strides: 2, padding: 1, ceil_mode: true}}
  outputs: [mp, ap]
verify: {{reference: numpy}}
"""
    (tmp_path / "s.yaml").write_text(spec)
    model, report = rebuild(tmp_path / "s.yaml")
    assert report.parity.method.startswith("numpy reference")
    assert report.parity.passed and report.parity.max_rel < 1e-5
    assert len(report.parity.outputs) == 2
    classes = {type(lay).__name__ for lay in model.layers}
    assert f"ZeroPadding{nd}D" in classes and "TorchPooling" in classes


def test_huge_pool_geometry_refused_before_allocation(tmp_path, monkeypatch):
    from wtransplant.building.keras_model import build_model
    from wtransplant.planning.spec import load_spec

    p = _spec(tmp_path, "    - {class: AveragePooling2D, name: ap, pool_size: 3, strides: 1, "
                        "padding: 1, count_include_pad: false}\n",
              inputs="input_shape: [100000, 100000, 1]")
    # the memory budget refuses such an input first, before any layer is built
    with pytest.raises(InputError, match=r"input 'input' of shape \(100000, 100000, 1\).*"
                                         r"refused before building"):
        build_model(load_spec(p).model)
    # with the budget lifted, the item's own geometry bound still holds
    monkeypatch.setenv("WTRANSPLANT_MEMORY_BUDGET", str(1 << 60))
    with pytest.raises(InputError, match=r"s\.yaml:7: model\.layers\[0\].*too large"):
        build_model(load_spec(p).model)


JAX_RUN = """
import sys
import numpy as np
import wtransplant  # registers TorchPooling
import keras
assert keras.backend.backend() == "jax"
m = keras.models.load_model(sys.argv[1])
z = np.load(sys.argv[2])
ys = m(np.transpose(z["x"], (0, 2, 3, 1)))
errs = [float(np.abs(keras.ops.convert_to_numpy(y) - z[k]).max() / np.abs(z[k]).max())
        for y, k in zip(ys, ["y0", "y1"])]
print(max(errs))
"""


@pytest.mark.slow
def test_torchpooling_model_runs_under_jax(tmp_path):
    # the saved .keras (ceil-mode pooling as wtransplant's own layer) is backend-independent:
    # loaded under JAX it still gives PyTorch's numbers
    pytest.importorskip("jax")
    import os

    from wtransplant import rebuild

    out = tmp_path / "rnet.keras"
    rebuild(SPECS / "mtcnn_rnet.yaml", output=out)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    r = subprocess.run([sys.executable, "-c", JAX_RUN, str(out),
                        str(TORCH / "mtcnn_rnet.io.npz")], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-5
