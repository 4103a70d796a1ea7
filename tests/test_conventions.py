"""Conventions as a registry: a name that selects one method per (aspect, convention).

A convention registered from outside the library (here, in the test) needs no edit of any
library file: a missing method is a one-line error naming the file, the tensor, the layer
type and the convention; a convention that inherits from ``torch`` and overrides one layer
type rebuilds a real PyTorch file (a copy of fixtures/torch/torch_cnn.h5 whose Linear
weights are stored transposed) to the writer's own outputs."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import yaml
from conftest import fx

from wtransplant.checking import reference
from wtransplant.planning.layouts import NotSupported, TargetLayer, TargetVar, conventions
from wtransplant.planning.layouts.conventions import (
    Convention,
    layout_method,
    register_convention,
    unregister_convention,
)
from wtransplant.planning.layouts.layers import DenseLayout, flatten_rows, vector
from wtransplant.planning.layouts.ops import Transpose
from wtransplant.planning.plan import build_recipe, make_plan
from wtransplant.planning.spec import load_spec
from wtransplant.reading.formats import SourceTensor
from wtransplant.reading.h5io import open_source
from wtransplant.reading.inspecting import load_source


def _dense(n_in, n_out, name="fc"):
    k = TargetVar(f"{name}/kernel", name, "kernel", (n_in, n_out))
    b = TargetVar(f"{name}/bias", name, "bias", (n_out,))
    return TargetLayer(name, "Dense", {}, [k, b]), k, b


@pytest.fixture
def bare():
    """A convention with no parent and no method of its own anywhere."""
    register_convention(Convention("bare", about="a test convention with no methods"))
    yield "bare"
    unregister_convention("bare")


def test_builtin_conventions_are_registered_with_their_facts():
    assert conventions.convention_names()[:4] == ("keras", "torch", "matlab", "plain")
    assert conventions.fact("torch", "flatten_order") == "chw"
    assert conventions.fact("matlab", "flatten_order") == "fortran"
    assert conventions.fact("keras", "flatten_order") is None
    assert conventions.fact("torch", "gates") == {"GRU": "rzh", "LSTM": "ifco"}
    assert conventions.fact("plain", "gates") == {"GRU": "zrh", "LSTM": "ifco"}
    assert conventions.fact("keras", "copies_unknown_layers") is True
    assert conventions.fact("torch", "copies_unknown_layers") is False


def test_a_missing_method_is_a_one_line_error(bare):
    lay, k, _ = _dense(4, 3)
    src = SourceTensor("w", "/w", (3, 4), (3, 4), "float32")
    with pytest.raises(NotSupported) as e:
        build_recipe(k, lay, [src], "bare", None)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in ("fc/kernel", "<- w", "Dense", "bare convention"):
        assert needle in msg, (needle, msg)
    # BatchNormalization's recipe is the same under every convention (recipe_any)
    bn = TargetVar("bn/gamma", "bn", "gamma", (4,))
    bn_lay = TargetLayer("bn", "BatchNormalization", {}, [bn])
    assert build_recipe(bn, bn_lay, [SourceTensor("g", "/g", (4,), (4,), "float32")], "bare",
                        None) == []


def test_a_missing_method_names_the_file(bare):
    """Through the planner, on a real file: the one line starts with the file."""
    path = fx("torch/torch_cnn.h5")
    spec = load_spec(data={"version": 1, "source": str(path), "convention": "bare",
                           "weights": {"fc2/kernel": "classifier.3.weight",
                                       "fc2/bias": "classifier.3.bias"}})
    lay, _, _ = _dense(32, 10, "fc2")
    with open_source(path) as src:
        loaded = load_source(src)
        with pytest.raises(NotSupported) as e:
            make_plan(spec, loaded, [lay])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(loaded.tree.display)), msg
    for needle in ("fc2/kernel", "classifier.3.weight", "Dense", "bare convention"):
        assert needle in msg, (needle, msg)


def test_unknown_convention_in_a_spec_lists_the_registered_ones(bare):
    spec = load_spec(data={"version": 1, "source": "x.h5", "convention": "bare"})
    assert spec.convention == "bare"
    from wtransplant.errors import InputError

    with pytest.raises(InputError, match="expected one of: auto, keras, torch, matlab, "
                                         "plain, onnx, bare"):
        load_spec(data={"version": 1, "source": "x.h5", "convention": "nope"})


# --------------------------------------------------------------------------------------
# a toy convention: PyTorch's layouts, except that Linear weights are stored (in, out)


@pytest.fixture
def toy():
    register_convention(Convention("toy", parent="torch",
                                   about="PyTorch, Linear weights stored (in, out)"))

    @layout_method("Dense", "recipe", "toy")
    def recipe_toy(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        n_in, n_out = target.shape
        return flatten_rows(layer, n_in, n_out)  # no transpose; rows still C,H,W (torch's)

    @reference.reference_method("Dense", "forward", "toy")
    def forward_toy(self, ref, lay, act):
        return self.forward_keras(ref, lay, act)  # y = x W with W (in, out)

    yield "toy"
    unregister_convention("toy")
    assert not hasattr(DenseLayout, "recipe_toy")
    assert not hasattr(reference.DenseRef, "forward_toy")


def test_toy_convention_inherits_torch_and_overrides_one_layer_type(toy):
    assert conventions.chain("toy") == ("toy", "torch")
    assert conventions.fact("toy", "flatten_order") == "chw"  # inherited
    assert reference.scope_for("toy") is reference.SCOPES["torch"]
    lay, k, b = _dense(4, 3)
    assert build_recipe(k, lay, [SourceTensor("w", "/w", (4, 3), (4, 3), "float32")], "toy",
                        None) == []
    ops = build_recipe(k, lay, [SourceTensor("w", "/w", (3, 4), (3, 4), "float32")], "torch",
                       None)
    assert [type(o) for o in ops] == [Transpose]  # torch itself is untouched
    conv = TargetVar("c/kernel", "c", "kernel", (3, 3, 2, 5))
    conv_lay = TargetLayer("c", "Conv2D", {}, [conv])
    ops = build_recipe(conv, conv_lay, [SourceTensor("cw", "/cw", (5, 2, 3, 3), (5, 2, 3, 3),
                                                     "float32")], "toy", None)
    assert [o.axes for o in ops] == [(2, 3, 1, 0)]  # torch's conv recipe, inherited


def test_toy_convention_rebuilds_a_real_file_to_the_writers_outputs(toy, tmp_path):
    pytest.importorskip("keras")
    from test_rebuild import reference_io, rel_err

    from wtransplant.building.transplanting import rebuild

    src = tmp_path / "toy_cnn.h5"
    shutil.copy(fx("torch/torch_cnn.h5"), src)
    with h5py.File(src, "r+") as f:  # the Linear weights, stored (in, out)
        for name in ("classifier.1.weight", "classifier.3.weight"):
            w = f[name][()]
            del f[name]
            f.create_dataset(name, data=np.ascontiguousarray(w.T))
    doc = yaml.safe_load(fx("specs/torch_cnn.yaml").read_text())
    doc.update(source=str(src), convention="toy")
    io = fx("torch/torch_cnn.io.npz")
    doc["verify"].update(inputs=f"{io}:x", expected=f"{io}:y")
    spec_path = tmp_path / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(doc))

    model, report = rebuild(spec_path)
    x, y = reference_io(fx("specs/torch_cnn.yaml"))  # channels-last
    assert rel_err(model, x, y) < 1e-5
    assert report.parity.passed and report.parity.max_rel < 1e-5
    fc1 = next(a for a in report.plan.assignments if a.target.key == "fc1/kernel")
    assert not any(isinstance(o, Transpose) and o.axes == (1, 0) for o in fc1.ops)
    conv1 = next(a for a in report.plan.assignments if a.target.key == "conv1/kernel")
    assert [o.axes for o in conv1.ops if isinstance(o, Transpose)] == [(2, 3, 1, 0)]
    # the NumPy reference imitates toy as PyTorch, except for its own Dense method
    spec = load_spec(spec_path)
    with open_source(spec.source) as s:
        ref = reference.build_reference(model, report.plan, s,
                                        spec_layers=spec.model.layers)
        got, _ = ref.forward(x)
    assert np.abs(got - y).max() / np.abs(y).max() < 1e-5
