"""Specs settled by data (issue 14): `spec FILE --inputs X --expected Y` settles every choice
the tensors cannot tell against the source model's own outputs, writes the evidence, leaves
ties undecided, refuses degenerate data; the settled draft rebuilds as written.

Fixtures (fixtures/make_settle.py): the seeds' layered file (h5py + numpy), and unnamed
arr_N lists of PyTorch models (numpy.savez names, h5py writes; PyTorch computes outputs)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml
from conftest import assert_one_line_error, fx, run_cli

from wtransplant.planning.draft import draft_spec

SEEDS = "layered/seeds_mlp"


def _draft(stem, tmp_path, **kw):
    io = fx(f"{stem}.io.npz")
    return draft_spec(fx(f"{stem}.h5"), spec_dir=tmp_path, inputs=f"{io}:x",
                      expected=f"{io}:y", **kw)


def _by_where(d):
    return {c["where"]: c for c in d.choices}


def _assert_clear(c, winner):
    assert c["status"] == "settled", c
    assert c["value"] == winner or c["winner"] == winner, c
    assert c["winner_error"] < 1e-5, c
    # the runner-up is far outside the noise floor
    assert c["runner_up_error"] > 10 * c["winner_error"], c


# --------------------------------------------------------------------------------------
# layer 1: no Keras needed to settle


def test_seeds_layered_file_settled(tmp_path):
    d = _draft(SEEDS, tmp_path)
    ch = _by_where(d)
    _assert_clear(ch["model.layers[0].activation"], "tanh")
    _assert_clear(ch["model.layers[1].activation"], "tanh")
    _assert_clear(ch["model.layers[2].activation"], "linear")
    assert d.spec.undecided == [] and d.rebuildable
    doc = yaml.safe_load(d.text)
    assert [lay["activation"] for lay in doc["model"]["layers"]] == ["tanh", "tanh", "linear"]
    assert doc["verify"]["inputs"].endswith("seeds_mlp.io.npz:x")
    # the evidence is in the YAML, as a comment on the settled value
    line = next(x for x in d.text.splitlines() if "name: fc1" in x)
    assert "# activation settled by data: tanh error" in line and "runner-up" in line
    # cost grows with the number of choices: fewer passes than every combination
    assert d.report["forward_evaluations"] < d.report["exhaustive_evaluations"]


def test_settling_does_not_import_keras(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from wtransplant.planning.draft import draft_spec; "
            f"draft_spec({str(fx(SEEDS + '.h5'))!r}, inputs={str(fx(SEEDS + '.io.npz'))!r}"
            f"+':x', expected={str(fx(SEEDS + '.io.npz'))!r}+':y'); "
            "bad=[m for m in ('keras','tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_unnamed_mlp_every_choice_settled(tmp_path):
    d = _draft("unnamed/unnamed_mlp", tmp_path)
    ch = _by_where(d)
    _assert_clear(ch["model.layers[0].activation"], "tanh")
    _assert_clear(ch["model.layers[1].activation"], "silu")
    _assert_clear(ch["model.layers[2].activation"], "softmax")
    # silu and swish are names of one function: one candidate, not a tie
    assert "swish" not in ch["model.layers[1].activation"]["candidates"]
    orient = ch["weights.fc2/kernel"]
    _assert_clear(orient, "out-by-in")
    mapping = ch["weights.fc1/bias + fc2/bias"]
    _assert_clear(mapping, "fc1/bias <- arr_1, fc2/bias <- arr_3")
    doc = yaml.safe_load(d.text)
    assert doc["weights"]["fc2/kernel"] == {"from": "arr_2", "transpose": [1, 0]}
    assert doc["weights"]["fc1/bias"] == "arr_1" and doc["weights"]["fc2/bias"] == "arr_3"
    assert d.spec.undecided == []


def test_permuted_unnamed_list_mapped_back(tmp_path):
    # the file lists b3, W2, b2, W1, W3, b1 (fixtures/make_settle.py)
    d = _draft("unnamed/unnamed_mlp_permuted", tmp_path)
    doc = yaml.safe_load(d.text)
    w = doc["weights"]
    assert w["fc1/kernel"] == "arr_3" and w["fc3/kernel"] == "arr_4" and w["fc3/bias"] == "arr_0"
    assert w["fc2/kernel"]["from"] == "arr_1"
    # order alone says fc1/bias <- arr_2; the data say arr_5 (b1)
    assert w["fc1/bias"] == "arr_5" and w["fc2/bias"] == "arr_2"
    assert _by_where(d)["weights.fc1/bias + fc2/bias"]["status"] == "settled"
    assert d.spec.undecided == []


def test_deliberate_tie_stays_undecided_and_says_what_splits_it(tmp_path):
    # every first-layer pre-activation is positive: relu and identity fit equally
    d = _draft("unnamed/unnamed_tie", tmp_path)
    c = _by_where(d)["model.layers[0].activation"]
    assert c["status"] == "tie", c
    assert set(c["tied"]) == {"relu", "linear"}
    assert "negative" in c["split_with"]
    assert abs(c["errors"]["relu"] - c["errors"]["linear"]) < 1e-6
    _assert_clear(_by_where(d)["model.layers[1].activation"], "linear")
    doc = yaml.safe_load(d.text)
    und = doc["model"]["layers"][0]["activation"]
    assert und["undecided"][:2] in (["relu", "linear"], ["linear", "relu"])
    assert "negative" in und["why"]
    assert [u["where"] for u in d.spec.undecided] == ["model.layers[0].activation"]
    assert not d.rebuildable
    assert any("never negative" in w for w in d.report["warnings"])


def test_all_ones_inputs_are_too_degenerate(tmp_path):
    io = np.load(fx("unnamed/unnamed_mlp.io.npz"))
    np.save(tmp_path / "ones.npy", np.ones_like(io["x"]))
    np.save(tmp_path / "y.npy", io["y"])
    d = draft_spec(fx("unnamed/unnamed_mlp.h5"), spec_dir=tmp_path,
                   inputs=tmp_path / "ones.npy", expected=tmp_path / "y.npy")
    assert "all ones" in d.report["degenerate"]
    assert all(c["status"] == "degenerate" for c in d.choices)
    assert d.report["settled"] == 0 and d.spec.undecided
    assert "too degenerate" in d.text
    # nothing was guessed: every activation is still a list of candidates
    doc = yaml.safe_load(d.text)
    assert all(isinstance(lay["activation"], dict) for lay in doc["model"]["layers"])


def test_few_and_rank_deficient_inputs_warn(tmp_path):
    io = np.load(fx("unnamed/unnamed_mlp.io.npz"))
    x = io["x"].copy()
    x[:, 3] = x[:, 0] * 2.0  # rank-deficient: 5 directions of 6
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", io["y"])
    np.save(tmp_path / "x6.npy", io["x"][:6])
    np.save(tmp_path / "y6.npy", io["y"][:6])
    d = draft_spec(fx("unnamed/unnamed_mlp.h5"), spec_dir=tmp_path,
                   inputs=tmp_path / "x.npy", expected=tmp_path / "y.npy")
    warns = " ".join(d.report["warnings"])
    assert "rank-deficient (rank 5 of 6" in warns and "samples" not in warns
    d = draft_spec(fx("unnamed/unnamed_mlp.h5"), spec_dir=tmp_path,
                   inputs=tmp_path / "x6.npy", expected=tmp_path / "y6.npy")
    assert "only 6 samples" in " ".join(d.report["warnings"])


def test_unnamed_list_without_data_drafts_undecided(tmp_path):
    d = draft_spec(fx("unnamed/unnamed_mlp.h5"), spec_dir=tmp_path)
    doc = yaml.safe_load(d.text)
    assert [lay["units"] for lay in doc["model"]["layers"]] == [16, 16, 3]
    assert doc["weights"]["fc1/kernel"] == "arr_0"
    assert doc["weights"]["fc2/kernel"]["undecided"]  # square: orientation unknown
    assert "--inputs" in d.text and not d.rebuildable


def test_flatten_whc_rows():
    """`flatten: whc`: a dense kernel whose rows follow a W,H,C flatten of the map."""
    from wtransplant.planning.layouts import TargetLayer, TargetVar
    from wtransplant.planning.layouts.ops import apply
    from wtransplant.planning.plan import build_recipe
    from wtransplant.planning.spec import WeightRef
    from wtransplant.reading.formats import SourceTensor

    rng = np.random.default_rng(0)
    h, w, c, n = 3, 4, 2, 5
    m = rng.standard_normal((h, w, c))
    src = rng.standard_normal((n, h * w * c))  # torch Linear (out, in), rows W,H,C
    want = src @ np.transpose(m, (1, 0, 2)).reshape(-1)
    t = SourceTensor("fc.weight", "/fc.weight", src.shape, src.shape, "float64")
    var = TargetVar("fc/kernel", "fc", "kernel", (h * w * c, n))
    lay = TargetLayer("fc", "Dense", {}, [var], flatten_from=(h, w, c))
    ops = build_recipe(var, lay, [t], "torch", WeightRef(["fc.weight"], flatten="whc"))
    k = apply(ops, [src])
    np.testing.assert_allclose(m.reshape(-1) @ k, want, rtol=1e-12)


@pytest.mark.slow
def test_unnamed_cnn_with_batchnorm_settled(tmp_path):
    d = _draft("unnamed/unnamed_cnn", tmp_path, input_layout="nchw")
    ch = _by_where(d)
    _assert_clear(ch["model.layers[1].epsilon"], 1e-3)
    eps2 = ch["model.layers[4].epsilon"]
    assert eps2["status"] == "settled" and eps2["value"] == 1e-5
    _assert_clear(ch["model.layers[2].activation"], "relu")
    _assert_clear(ch["model.layers[5].activation"], "tanh")
    _assert_clear(ch["model.layers[7].activation"], "linear")
    _assert_clear(ch["weights.fc1/kernel"], "chw: C,H,W (PyTorch)")
    doc = yaml.safe_load(d.text)
    conv1, conv2 = doc["model"]["layers"][0], doc["model"]["layers"][3]
    assert (conv1["padding"], conv2["padding"]) == ("same", "valid")
    assert doc["weights"]["bn2/moving_variance"] == "arr_12"
    assert doc["verify"]["input_layout"] == "nchw"
    assert d.spec.undecided == []
    keras = pytest.importorskip("keras")  # noqa: F841
    from wtransplant.building.transplanting import rebuild

    spec_path = tmp_path / "cnn.yaml"
    spec_path.write_text(d.text)
    _model, report = rebuild(spec_path, progress=False, checksums=False)
    assert report.verified and report.parity.max_abs < 1e-5


# --------------------------------------------------------------------------------------
# the command line, then rebuild with no edit


def test_cli_seeds_spec_then_rebuild_no_edit(tmp_path):
    io = fx(SEEDS + ".io.npz")
    spec = tmp_path / "seeds.yaml"
    t0 = time.perf_counter()
    r = run_cli("spec", fx(SEEDS + ".h5"), "--inputs", f"{io}:x", "--expected", f"{io}:y",
                "-o", spec, "--report", tmp_path / "settle.json")
    t_spec = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "settled 3 of 3" in r.stderr
    rep = json.loads((tmp_path / "settle.json").read_text())
    assert {c["winner"] for c in rep["choices"]} == {"tanh", "linear"}
    assert all(c["runner_up_error"] > 1e-3 for c in rep["choices"])
    t0 = time.perf_counter()
    r = run_cli("rebuild", "--spec", spec, "-o", tmp_path / "seeds.keras", "--report",
                tmp_path / "rebuild.json")
    t_rebuild = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    rb = json.loads((tmp_path / "rebuild.json").read_text())
    assert rb["verified"] is True
    assert rb["parity"]["max_abs"] < 1e-5
    print(f"seeds: spec {t_spec:.2f} s, rebuild {t_rebuild:.2f} s, "
          f"parity {rb['parity']['max_abs']:.2g}")


def test_cli_tie_spec_refused_by_rebuild(tmp_path):
    io = fx("unnamed/unnamed_tie.io.npz")
    spec = tmp_path / "tie.yaml"
    r = run_cli("spec", fx("unnamed/unnamed_tie.h5"), "--inputs", f"{io}:x", "--expected",
                f"{io}:y", "-o", spec, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [c["status"] for c in rep["choices"]] == ["tie", "settled"]
    r = run_cli("rebuild", "--spec", spec, "--no-save")
    assert_one_line_error(r, 2, "model.layers[0].activation")


def test_cli_spec_needs_both(tmp_path):
    r = run_cli("spec", fx(SEEDS + ".h5"), "--inputs", fx(SEEDS + ".io.npz"))
    assert_one_line_error(r, 2, "--expected")


def test_names_with_control_characters_stay_in_their_yaml_values(tmp_path):
    """File names reach the settled draft's comments and values: one line each, escaped,
    and the draft still loads (the source and the data refer to the same files)."""
    import shutil

    from wtransplant.planning.spec import load_spec

    weird = tmp_path / "we\nird\x1b.h5"
    shutil.copy(fx(SEEDS + ".h5"), weird)
    io = np.load(fx(SEEDS + ".io.npz"))
    xs = tmp_path / "x\nx.npy"
    np.save(xs, io["x"])
    np.save(tmp_path / "y.npy", io["y"])
    d = draft_spec(weird, spec_dir=tmp_path, inputs=str(xs), expected=str(tmp_path / "y.npy"))
    assert all(line.isprintable() for line in d.text.splitlines())
    s = load_spec(text=d.text, base_dir=tmp_path)
    assert s.source == weird.resolve() and s.verify.inputs == "x\nx.npy"
    assert s.undecided == []


def test_cli_spec_output_never_an_input(tmp_path):
    io = tmp_path / "io.npz"
    z = np.load(fx(SEEDS + ".io.npz"))
    np.savez(io, x=z["x"], y=z["y"])
    before = io.read_bytes()
    r = run_cli("spec", fx(SEEDS + ".h5"), "--inputs", f"{io}:x", "--expected", f"{io}:y",
                "-o", io)
    assert_one_line_error(r, 2, "also an input")
    r = run_cli("spec", fx(SEEDS + ".h5"), "--inputs", f"{io}:x", "--expected", f"{io}:y",
                "--report", io)
    assert_one_line_error(r, 2, "also an input")
    assert io.read_bytes() == before


def _rebuilds_to_its_outputs(text: str, fixture: str, tmp_path, nchw: bool = False):
    """Rebuild a settled draft as written: verified against its data, and the model matches
    the fixture's own outputs read independently of wtransplant."""
    spec_path = tmp_path / "settled.yaml"
    spec_path.write_text(text)
    pytest.importorskip("keras")
    from wtransplant.building.transplanting import rebuild

    model, report = rebuild(spec_path, progress=False, checksums=False)
    assert report.verified and report.parity.max_abs < 1e-5
    io = np.load(fx(fixture + ".io.npz"))
    x = np.transpose(io["x"], (0, 2, 3, 1)) if nchw else io["x"]
    np.testing.assert_allclose(np.asarray(model(x, training=False)), io["y"],
                               atol=1e-5, rtol=1e-4)


def test_permuted_unnamed_list_rebuilds_as_settled(tmp_path):
    d = _draft("unnamed/unnamed_mlp_permuted", tmp_path)
    _rebuilds_to_its_outputs(d.text, "unnamed/unnamed_mlp_permuted", tmp_path)


def test_all_square_numbered_file_orientation_settled(tmp_path):
    """Weights/Layer1..2 all 8x8 (h5py + numpy, written here): the shapes cannot tell the
    orientation, so the plain draft is empty; with data each orientation is settled, and
    one stored in-by-out is told from one stored out-by-in."""
    import h5py

    rng = np.random.default_rng(3)
    w = [rng.standard_normal((8, 8)) / 3 for _ in range(2)]
    b = [rng.standard_normal((8, 1)) * 0.1 for _ in range(2)]
    with h5py.File(tmp_path / "sq.h5", "w") as f:
        f["Weights/Layer1"] = w[0]  # out-by-in: y = W x
        f["Weights/Layer2"] = w[1].T  # stored in-by-out
        for i in range(2):
            f[f"Bias/Layer{i + 1}"] = b[i]
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = (np.tanh(x @ w[0].T + b[0].T) @ w[1].T + b[1].T).astype(np.float32)
    np.savez(tmp_path / "io.npz", x=x, y=y)
    assert "layers: []" in draft_spec(tmp_path / "sq.h5", spec_dir=tmp_path).text
    io = tmp_path / "io.npz"
    d = draft_spec(tmp_path / "sq.h5", spec_dir=tmp_path, inputs=f"{io}:x",
                   expected=f"{io}:y")
    ch = _by_where(d)
    _assert_clear(ch["weights.fc1/kernel"], "out-by-in")
    _assert_clear(ch["weights.fc2/kernel"], "in-by-out")
    _assert_clear(ch["model.layers[0].activation"], "tanh")
    doc = yaml.safe_load(d.text)
    assert doc["weights"]["fc2/kernel"] == {"from": "Weights/Layer2", "transpose": [0, 1]}
    assert doc["weights"]["fc1/bias"] == "Bias/Layer1" and doc["convention"] == "plain"
    assert d.spec.undecided == []


def test_search_budget_spent_leaves_choices_undecided(tmp_path, monkeypatch):
    import wtransplant.planning.settle as st

    monkeypatch.setattr(st, "MAX_EVALUATIONS", 5)
    d = _draft("unnamed/unnamed_mlp", tmp_path)
    assert any("stopped after" in w for w in d.report["warnings"])
    unsettled = {c["where"] for c in d.choices if c["status"] != "settled"}
    assert unsettled  # silu is not among the usual candidates: not reached in 5 passes
    # every unsettled choice is undecided in the spec (a mapping spans several entries)
    und = {u["where"] for u in d.spec.undecided}
    for c in unsettled:
        keys = c.removeprefix("weights.").split(" + ")
        assert c in und or all(f"weights.{k}" in und for k in keys), (c, und)
    assert all(any(u.removeprefix("weights.") in c for c in unsettled) for u in und)
    assert d.report["forward_evaluations"] < 100


# --------------------------------------------------------------------------------------
# RNN gate order and GRU reset_after (fixtures/make_settle.py rnn(): PyTorch GRU/LSTM
# state_dict values as an unnamed list, PyTorch's own outputs)

GRU_GATES = "weights.gru/kernel + gru/recurrent_kernel + gru/bias"


def test_unnamed_gru_gate_order_settled(tmp_path):
    d = _draft("unnamed/unnamed_gru", tmp_path)
    c = _by_where(d)[GRU_GATES]
    assert c["status"] == "settled" and c["winner"] == "gates rzn", c
    assert c["winner_error"] < 1e-5 and c["runner_up"] == "gates zrh"
    assert c["runner_up_error"] > 1e-2, c
    doc = yaml.safe_load(d.text)
    assert doc["model"]["layers"][0] == {"class": "GRU", "name": "gru", "units": 5}
    assert doc["weights"]["gru/kernel"] == {"from": "arr_0", "gates": "rzn"}
    assert doc["weights"]["gru/bias"] == {"from": ["arr_2", "arr_3"], "gates": "rzn"}
    line = next(x for x in d.text.splitlines() if x.strip().startswith("gru/recurrent_kernel"))
    assert "# settled by data: gates rzn error" in line and "runner-up gates zrh" in line
    assert d.spec.undecided == [] and d.rebuildable


def test_unnamed_lstm_gate_order_settled(tmp_path):
    d = _draft("unnamed/unnamed_lstm", tmp_path)
    c = _by_where(d)["weights.lstm/kernel + lstm/recurrent_kernel + lstm/bias"]
    assert c["status"] == "settled" and c["winner"] == "gates ifgo", c
    assert c["winner_error"] < 1e-5 and c["runner_up_error"] > 1e-2, c
    assert set(c["errors"]) == {"gates ifgo", "gates iofc", "gates icfo"}
    assert yaml.safe_load(d.text)["weights"]["lstm/kernel"]["gates"] == "ifgo"


def _plain_gru_doc(stem):
    """A plain-convention draft of the PyTorch GRU file: nothing fixes the gate order or
    reset_after; the wrong candidates come first."""
    und = lambda src, **kw: {"undecided": [{"from": src, **kw, "gates": g}  # noqa: E731
                                           for g in ("zrh", "rzn")]}
    return {"version": 1, "source": str(fx(f"unnamed/{stem}.h5")), "convention": "plain",
            "model": {"input_shape": [7, 4], "layers": [
                {"class": "GRU", "name": "gru", "units": 5,
                 "reset_after": {"undecided": [False, True]}},
                {"class": "Dense", "name": "fc", "units": 3}]},
            "weights": {"gru/kernel": und("arr_0", transpose=[1, 0]),
                        "gru/recurrent_kernel": und("arr_1", transpose=[1, 0]),
                        "gru/bias": und(["arr_2", "arr_3"]),
                        "fc/kernel": "arr_4", "fc/bias": "arr_5"}}


def test_plain_gru_reset_after_and_gates_settled():
    from wtransplant.planning.settle import settle
    from wtransplant.reading.h5io import open_source
    from wtransplant.reading.inspecting import load_source

    io = np.load(fx("unnamed/unnamed_gru.io.npz"))
    with open_source(fx("unnamed/unnamed_gru.h5")) as src:
        res = settle(_plain_gru_doc("unnamed_gru"), load_source(src), src, io["x"], io["y"],
                     convention="plain")
    ch = {c.where: c for c in res.choices}
    ra = ch["model.layers[0].reset_after"]
    assert ra.status == "settled" and ra.value is True, ra.evidence
    assert ra.errors["true"] < 1e-5 < 1e-2 < ra.errors["false"]
    assert ra.evidence.startswith("settled by data: true error")
    g = ch[GRU_GATES]
    assert g.status == "settled" and g.errors["gates rzn"] < 1e-5 < 1e-2 < g.errors["gates zrh"]
    assert res.doc["weights"]["gru/bias"] == {"from": ["arr_2", "arr_3"], "gates": "rzn"}
    assert res.doc["model"]["layers"][0]["reset_after"] is True


def test_gates_key_checked(tmp_path):
    from wtransplant.planning.spec import load_spec

    text = yaml.safe_dump(_plain_gru_doc("unnamed_gru"))
    spec = tmp_path / "g.yaml"
    spec.write_text(text.replace("gates: zrh", "gates: zqh"))
    with pytest.raises(Exception, match="gate order"):
        load_spec(spec)


def test_unnamed_gru_rebuilds_as_settled(tmp_path):
    d = _draft("unnamed/unnamed_gru", tmp_path)
    _rebuilds_to_its_outputs(d.text, "unnamed/unnamed_gru", tmp_path)


# --------------------------------------------------------------------------------------
# PyTorch padding vs Keras `same` (fixtures/make_settle.py stride2(): PyTorch Conv2d(3, 4, 3,
# stride=2, padding=1): both give a 4x4 map from 8x8, only the data tell them apart)

STRIDE2 = "unnamed/unnamed_stride2"


def _draft_nchw(stem, tmp_path):
    return _draft(stem, tmp_path, input_layout="nchw")


def test_stride2_torch_padding_settled_by_data(tmp_path):
    d = _draft_nchw(STRIDE2, tmp_path)
    c = _by_where(d)["model.layers[0].padding, model.layers[0].strides"]
    assert c["status"] == "settled", c
    assert c["winner"] == "conv1 padding 1, conv1 strides 2", c
    assert c["winner_error"] < 1e-5
    # the shapes agree either way: Keras' same at stride 2 is the runner-up, on the data
    assert c["runner_up"] == "conv1 padding same, conv1 strides 2"
    assert c["runner_up_error"] > 1e-2
    conv = yaml.safe_load(d.text)["model"]["layers"][0]
    assert (conv["padding"], conv["strides"]) == (1, 2)
    line = next(x for x in d.text.splitlines() if "name: conv1" in x)
    assert "padding settled by data: conv1 padding 1, conv1 strides 2 error" in line
    assert "runner-up conv1 padding same, conv1 strides 2" in line


def test_stride1_torch_padding_is_not_a_choice(tmp_path):
    """PyTorch Conv2d(3, 8, 3, padding=1) at stride 1 computes what Keras' same does: the
    integer padding is not offered next to same (no tie between equal functions)."""
    d = _draft_nchw("unnamed/unnamed_cnn", tmp_path)
    c = next(c for c in d.choices if c["where"].startswith("model.layers[0].padding"))
    assert c["status"] == "settled"
    assert not any("conv1 padding 1, conv1 strides 1" in lab for lab in c["errors"]), c
    assert yaml.safe_load(d.text)["model"]["layers"][0]["padding"] == "same"


def test_stride2_settled_draft_rebuilds(tmp_path):
    d = _draft_nchw(STRIDE2, tmp_path)
    _rebuilds_to_its_outputs(d.text, STRIDE2, tmp_path, nchw=True)


def test_unnamed_gru_without_data_gate_order_undecided_and_refused(tmp_path):
    spec = tmp_path / "gru.yaml"
    r = run_cli("spec", fx("unnamed/unnamed_gru.h5"), "-o", spec)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(spec.read_text())
    assert doc["model"]["layers"][0]["class"] == "GRU"
    assert [c["gates"] for c in doc["weights"]["gru/kernel"]["undecided"]] == ["rzn", "zrh"]
    assert "&id" not in spec.read_text()  # no YAML anchors in a file users edit
    r = run_cli("rebuild", "--spec", spec, "--no-save")
    assert_one_line_error(r, 2, "weights.gru/kernel")


def test_plain_gru_settled_doc_rebuilds(tmp_path):
    """The plain path through Keras: arrays transposed as the spec says, the two biases
    stacked for reset_after=True, the gate blocks reordered last (r,z,n -> z,r,h)."""
    from wtransplant.planning.settle import settle
    from wtransplant.reading.h5io import open_source
    from wtransplant.reading.inspecting import load_source

    io_path = fx("unnamed/unnamed_gru.io.npz")
    io = np.load(io_path)
    with open_source(fx("unnamed/unnamed_gru.h5")) as src:
        res = settle(_plain_gru_doc("unnamed_gru"), load_source(src), src, io["x"], io["y"],
                     convention="plain")
    doc = res.doc
    doc["verify"] = {"inputs": f"{io_path}:x", "expected": f"{io_path}:y"}
    _rebuilds_to_its_outputs(yaml.safe_dump(doc), "unnamed/unnamed_gru", tmp_path)


def test_named_torch_draft_offers_torch_padding():
    """A PyTorch state_dict's conv: the draft offers PyTorch's integer padding (k // 2)
    next to same/valid, so the data can tell them apart at stride 2; same stays first."""
    from wtransplant.planning.spec import load_spec

    d = draft_spec(fx("torch/torch_cnn.h5"))
    und = {(u["layer"], u["key"]): u["candidates"]
           for u in load_spec(text=d.text, base_dir=fx("torch")).undecided}
    assert und[("features_0", "padding")] == ["same", "valid", 1]
