"""The NumPy reference of the source's own semantics, and the per-layer diagnosis."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIX, fx
from test_rebuild import reference_io

from wtransplant.checking.reference import NotCovered, build_reference
from wtransplant.errors import ParityError
from wtransplant.planning.spec import WeightRef, load_spec
from wtransplant.reading.h5io import open_source

keras = pytest.importorskip("keras")
from wtransplant.building.transplanting import rebuild, rebuild_file  # noqa: E402
from wtransplant.checking.diagnose import diagnose  # noqa: E402

COVERED = ["torch_cnn", "torch_gru", "torch_lstm", "octave_mlp", "matlab73_mlp", "k3_mlp"] + \
    [f"torch_layers/{p.stem}" for p in sorted((FIX / "specs/torch_layers").glob("*.yaml"))]


def _reference(model, report, spec):
    with open_source(spec.source) as src:
        return build_reference(model, report.plan, src,
                               spec_layers=spec.model.layers if spec.model else None)


@pytest.mark.parametrize("name", COVERED)
def test_reference_alone_reproduces_the_writer(name):
    """The reference is only worth something if it computes what the writer computed,
    from the raw tensors, without wtransplant's conversions."""
    spec = load_spec(fx(f"specs/{name}.yaml"))
    model, report = rebuild(spec)
    ref = _reference(model, report, spec)
    x, y = reference_io(fx(f"specs/{name}.yaml"))
    out, _ = ref.forward(x)
    assert np.abs(out - y).max() / np.abs(y).max() < 1e-5


@pytest.mark.parametrize("name", ["k2_rnn_model", "k2_birnn_model", "k2_cnn_model",
                                  "k2_digits_model"])
def test_reference_keras_semantics_on_keras2_files(name):
    model, report = rebuild_file(fx(f"keras2/{name}.h5"))
    with open_source(fx(f"keras2/{name}.h5")) as src:
        ref = build_reference(model, report.plan, src)
    io = np.load(fx(f"keras2/{name}.io.npz"))
    out, _ = ref.forward(io["x"])
    assert np.abs(out - io["y"]).max() / np.abs(io["y"]).max() < 1e-5


def test_rebuild_without_reference_data_checks_against_the_reference():
    spec = load_spec(fx("specs/torch_cnn.yaml"))
    spec.verify = None
    _, report = rebuild(spec)
    assert report.parity.method.startswith("numpy reference (torch semantics")
    assert report.parity.passed and report.parity.max_rel < 1e-5


def test_reference_declines_with_a_reason():
    spec = load_spec(fx("specs/layered_mlp.yaml"))
    spec.verify = None
    _, report = rebuild(spec)
    assert report.parity is None and "plain convention" in report.parity_note
    # a graph is covered now (issue 13): MobileNetV2's residual Adds, under keras semantics
    s = load_spec(fx("specs/k2_mobilenetv2.yaml"))
    m, r = rebuild(s)
    ref = _reference(m, r, s)
    x = np.load(fx("keras2/k2_mobilenetv2_weights.io.npz"))["x"][:2]
    y = np.load(fx("keras2/k2_mobilenetv2_weights.io.npz"))["y"][:2]
    got, _ = ref.forward(x, keep=False)
    assert np.abs(got - y).max() / np.abs(y).max() < 1e-5
    # a layer called twice (shared) is still declined, with the reason
    inp = keras.Input((4,))
    dense = keras.layers.Dense(4, name="shared")
    m2 = keras.Model(inp, dense(dense(inp)))
    with pytest.raises(NotCovered, match="shared"):
        build_reference(m2, r.plan, None)


def _broken(name, mutate):
    spec = load_spec(fx(f"specs/{name}.yaml"))
    spec.verify = None  # nothing to check against but the reference
    mutate(spec)
    with pytest.raises(ParityError) as e:
        rebuild(spec)
    rep = e.value.report
    assert rep.parity.method.startswith("numpy reference")
    return rep.diagnosis, str(e.value)


def test_catches_transposed_square_kernel():
    diag, msg = _broken("torch_layers/square", lambda s: s.weights.__setitem__(
        "square/kernel", WeightRef(["square.weight"], transpose=(0, 1))))
    assert diag["first_diverging_layer"] == "square"
    assert diag["cause"] == "a square kernel transposed the wrong way"
    assert "first diverging layer square" in msg


def test_catches_swapped_gru_gates():
    def mutate(s):  # transposed only: the r,z,n -> z,r,h reorder is skipped
        s.weights["rnn/kernel"] = WeightRef(["rnn.weight_ih_l0"], transpose=(1, 0))
        s.weights["rnn/recurrent_kernel"] = WeightRef(["rnn.weight_hh_l0"], transpose=(1, 0))

    diag, _ = _broken("torch_gru", mutate)
    assert diag["first_diverging_layer"] == "rnn"
    assert "gates in the wrong order" in diag["cause"] and "r,z,h" in diag["cause"]


def test_catches_flatten_order():
    diag, _ = _broken("torch_cnn", lambda s: s.weights.__setitem__(
        "fc1/kernel", WeightRef(["classifier.1.weight"], flatten="none")))
    assert diag["first_diverging_layer"] == "fc1"
    assert "flatten order" in diag["cause"]
    # the layers before it matched
    before = [x for x in diag["layers"] if x["name"] in ("conv1", "bn1", "pool2", "flatten")]
    assert before and all(x["ok"] for x in before)


def test_catches_batchnorm_epsilon():
    def mutate(s):
        for lay in s.model.layers:
            lay.pop("epsilon", None)  # Keras' default 1e-3 under the torch convention

    diag, _ = _broken("torch_cnn", mutate)
    assert diag["first_diverging_layer"] == "bn1"
    assert "epsilon of 0.001 where the source used 1e-05" in diag["cause"]


def test_catches_square_kernel_in_octave_chain():
    diag, _ = _broken("octave_mlp", lambda s: s.weights.__setitem__(
        "fc2/kernel", WeightRef(["W2"], transpose=(0, 1))))
    assert (diag["first_diverging_layer"], diag["cause"]) == (
        "fc2", "a square kernel transposed the wrong way")


def test_diagnosis_from_stored_activations():
    """Users with activations of the original model, stored under the layers' names."""
    spec = load_spec(fx("specs/torch_cnn.yaml"))
    model, report = rebuild(spec)
    x, _ = reference_io(fx("specs/torch_cnn.yaml"))
    _, acts = _reference(model, report, spec).forward(x)
    stored = {k: v.astype(np.float32) for k, v in acts.items()}  # as a user would save them
    good = diagnose(model, stored, x, method="stored activations")
    assert good.first_bad is None and len(good.layers) == len(stored)
    bn = model.get_layer("bn2")
    w = bn.get_weights()
    bn.set_weights([w[0], w[1], w[3], w[2]])  # moving mean and variance swapped
    bad = diagnose(model, stored, x, method="stored activations")
    assert bad.first_bad == "bn2"
    assert [d.name for d in bad.layers if d.ok][:4] == ["conv1", "bn1", "relu1", "pool1"]
