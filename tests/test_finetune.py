"""`wtransplant finetune`: data readers (layer 1, fast), the transfer-learning loop on the
Keras 2 digits CNN (fixtures/keras2/k2_digits_model.h5, trained on digits 0-4) fine-tuned
on all ten digits (fixtures/data/digits.h5, scikit-learn's bundled data), resume,
determinism, NaN handling, strategies, backends."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, fx, run_cli

from wtransplant.errors import InputError
from wtransplant.finetuning import data as fdata
from wtransplant.finetuning import records

K2 = "keras2/k2_digits_model.h5"
DIGITS = "data/digits.h5"
FROZEN = ("conv2d", "batch_normalization", "conv2d_1", "batch_normalization_1")


# --------------------------------------------------------------------------------------
# layer 1: names, batches, readers (no Keras)


def test_pairs_found_by_name():
    names = {"train_set_x": 9, "train_set_y": 9, "test_set_x": 3, "test_set_y": 3,
             "list_classes": 10}
    p = fdata.choose_pair(names, "f.h5", x=None, y=None, role="train")
    assert (p.x, p.y) == ("train_set_x", "train_set_y")
    v = fdata.matching_val_pair(names, p)
    assert (v.x, v.y) == ("test_set_x", "test_set_y")
    npz = {"x": 9, "y": 9, "x_val": 3, "y_val": 3}
    p = fdata.choose_pair(npz, "f.npz", x=None, y=None, role="train")
    assert (p.x, p.y) == ("x", "y")
    assert fdata.matching_val_pair(npz, p).x == "x_val"
    keras_style = {"X_train": 5, "y_train": 5, "X_test": 2, "y_test": 2}
    p = fdata.choose_pair(keras_style, "f", x=None, y=None, role="train")
    assert (p.x, p.y) == ("X_train", "y_train")
    assert fdata.choose_pair(keras_style, "f", x=None, y=None, role="val").x == "X_test"
    assert fdata.choose_pair({"images": 4, "labels": 4}, "f", x="images", y=None,
                             role="train").y == "labels"
    # different lengths never pair; two unsplit pairs are ambiguous
    assert fdata.find_pairs({"x": 4, "y": 5}) == []
    with pytest.raises(InputError, match="several none pairs"):
        fdata.choose_pair({"x": 4, "y": 4, "images": 3, "labels": 3}, "f", x=None, y=None,
                          role="train")
    with pytest.raises(InputError, match="no array 'nope'"):
        fdata.choose_pair(names, "f.h5", x="nope", y=None, role="train")


@pytest.mark.parametrize("n,bs", [(1437, 32), (100, 10), (7, 3), (5, 8)])
def test_batches_cover_every_sample_once_in_contiguous_reads(n, bs):
    seen_orders = set()
    for epoch in range(4):
        rng = np.random.default_rng([3, epoch, 0])
        plan = fdata.batch_segments(n, bs, rng)
        assert len(plan) == -(-n // bs)
        idx = [i for segs in plan for a, b in segs for i in range(a, b)]
        assert sorted(idx) == list(range(n))
        assert all(1 <= len(segs) <= 2 for segs in plan)  # one read, two when it wraps
        assert all(sum(b - a for a, b in segs) <= bs for segs in plan)
        seen_orders.add(tuple(idx))
    if n > bs:
        assert len(seen_orders) > 1  # the order changes from epoch to epoch


def test_batch_reader_is_a_function_of_seed_epoch_index_and_shards_split_batches():
    ds = fdata.Dataset(fdata.MemoryArray(np.arange(100, dtype=np.float32)[:, None], "x"),
                       fdata.MemoryArray(np.arange(100), "y"))
    a = fdata.BatchReader(ds, 16, shuffle=True, seed=5)
    b = fdata.BatchReader(ds, 16, shuffle=True, seed=5)
    for i in (6, 0, 3):  # any order of requests, as prefetching threads make them
        np.testing.assert_array_equal(a.batch(2, i)[1], b.batch(2, i)[1])
    assert not np.array_equal(a.batch(2, 0)[1], a.batch(3, 0)[1])
    xb, yb = a.batch(1, 4)
    np.testing.assert_array_equal(xb[:, 0], yb)  # x and y permuted together
    # two workers: the pieces of each full batch make the batch; no partial batch
    w = [fdata.BatchReader(ds, 16, shuffle=True, seed=5, shard=(k, 2)) for k in range(2)]
    assert len(w[0]) == len(w[1]) == 100 // 16
    plan = [s for s in a._plan(1) if sum(q - p for p, q in s) == 16]
    for i in range(len(w[0])):
        pieces = np.concatenate([w[k].ds.y.take(w[k].segments(1, i)) for k in range(2)])
        assert sorted(pieces) == sorted(ds.y.take(plan[i]))


@pytest.mark.parametrize("bs,table", [(16, 4096), (7, 4096), (16, 40), (60, 40)])
def test_stacked_runs_of_batches_are_the_batches(tmp_path, monkeypatch, bs, table):
    """BatchReader.stack (one pass over a run of batches, what the tf.data loader uses)
    gives exactly batch(epoch, i) for each, from HDF5 and from memory, shuffled or not,
    for a shard's pieces too; it declines runs of mixed sizes, augmentation and runs with a
    non-finite sample. Every batch's shuffle is a permutation of its own samples; runs
    span several shuffle tables (small ``table``)."""
    monkeypatch.setattr(fdata, "PERM_TABLE_SAMPLES", table)
    x = np.arange(103 * 4, dtype=np.float32).reshape(103, 4)
    y = np.arange(103)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
    h5 = fdata.Dataset(fdata.H5Array(tmp_path / "d.h5", "x"), fdata.H5Array(tmp_path / "d.h5", "y"))
    mem = fdata.Dataset(fdata.MemoryArray(x, "x"), fdata.MemoryArray(y, "y"))
    pre = fdata.Preprocess(rescale=0.5, reshape=(2, 2, 1))
    for ds in (h5, mem):
        for shuffle, shard in ((True, None), (False, None), (True, (1, 3))):
            r = fdata.BatchReader(ds, bs, shuffle=shuffle, seed=9, pre=pre, y_dtype="int32",
                                  shard=shard)
            for epoch in (0, 1):
                i = 0
                while i < len(r):
                    m, j = r.size(epoch, i), i + 1
                    while j < len(r) and r.size(epoch, j) == m:
                        j += 1
                    gx, gy = r.stack(epoch, i, j)
                    for k in range(i, j):
                        wx, wy = r.batch(epoch, k)
                        np.testing.assert_array_equal(gx[k - i], wx)
                        np.testing.assert_array_equal(gy[k - i], wy)
                        assert gy.dtype == wy.dtype and gx.dtype == wx.dtype
                        rows = [v for a, b in r.segments(epoch, k) for v in range(a, b)]
                        assert sorted(wy) == sorted(rows)  # its own samples, each once
                    if j < len(r):
                        assert r.stack(epoch, i, j + 1) is None  # sizes differ
                    i = j
    aug = fdata.BatchReader(mem, 16, shuffle=True, seed=9, augment=True,
                            pre=fdata.Preprocess(reshape=(2, 2, 1), flip="horizontal"))
    assert aug.stack(0, 0, 2) is None
    bad = x.copy()
    bad[40, 2] = np.nan
    r = fdata.BatchReader(fdata.Dataset(fdata.MemoryArray(bad, "x"), fdata.MemoryArray(y, "y")),
                          103, shuffle=False, seed=0)
    assert r.stack(0, 0, 1) is None
    a, b = fdata.BatchReader(mem, 16, shuffle=True, seed=2), fdata.BatchReader(mem, 16, shuffle=True, seed=2)
    assert not np.array_equal(a.perms(0, 0, 6, 16), a.perms(1, 0, 6, 16))
    np.testing.assert_array_equal(a.perms(0, 3, 4, 9)[0], b.perms(0, 0, 6, 16)[3][b.perms(0, 0, 6, 16)[3] < 9])


def test_nonfinite_samples_found_per_batch_named_or_skipped_and_counted():
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100, dtype=np.float32)
    x[37, 1], y[80] = np.nan, np.inf
    ds = fdata.Dataset(fdata.MemoryArray(x, "d.h5:x"), fdata.MemoryArray(y, "d.h5:y"))
    r = fdata.BatchReader(ds, 16, shuffle=True, seed=3)
    with pytest.raises(InputError) as e:
        for i in range(len(r)):
            r.batch(0, i)
    assert str(e.value).startswith(("d.h5:x: sample 37 contains NaN",
                                    "d.h5:y: target of sample 80 contains Inf"))
    assert r.guard.error is e.value  # kept for the training loop (loader threads)
    guard = fdata.NonFiniteGuard(skip=True)
    r = fdata.BatchReader(ds, 16, shuffle=True, seed=3, guard=guard)
    got = np.concatenate([r.batch(0, i)[1] for i in range(len(r))])
    assert len(got) == 98 and 37.0 not in got and np.isfinite(got).all()
    assert guard.count() == 2 and guard.skipped == {"d.h5:x": {37}, "d.h5:y": {80}}
    r.batch(1, 0)
    assert guard.count() == 2  # a sample seen again in another epoch counts once
    # a --val-split tail names the sample by its index in the file
    _train, val = fdata.Dataset(fdata.MemoryArray(x, "d.h5:x"),
                                fdata.MemoryArray(np.arange(100.0), "d.h5:y")).split_tail(0.7)
    with pytest.raises(InputError, match="sample 37 contains NaN"):
        fdata.BatchReader(val, 100, shuffle=False, seed=0).batch(0, 0)
    # integer data is never scanned; the targets' pre-scan names the sample too
    assert fdata.NonFiniteGuard.bad_rows(np.zeros((4, 3), np.uint8)) is None
    with pytest.raises(InputError, match=r"d.h5:y: target of sample 80 contains Inf"):
        fdata.label_info(ds.y)
    assert fdata.label_info(ds.y, skip_nonfinite=True).maximum == 99


def _read_in_child(arr):
    return os.getpid(), arr.read(10, 20)


def test_hdf5_reader_opens_lazily_once_per_process(tmp_path):
    arr = fdata.H5Array(fx(DIGITS), "train_set_x")
    first = arr.read(10, 20)
    assert arr._pid == os.getpid()
    clone = pickle.loads(pickle.dumps(arr))  # the handle never travels
    assert clone._ds is None
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        pid, got = pool.apply(_read_in_child, (arr,))
    assert pid != os.getpid()
    np.testing.assert_array_equal(got, first)
    assert arr._pid == os.getpid()  # the parent's handle is untouched
    with pytest.raises(InputError, match="no dataset '/nope'"):
        fdata.H5Array(fx(DIGITS), "nope")


def test_load_data_defaults_for_each_format(tmp_path):
    b = fdata.load_data(fx(DIGITS))
    assert (len(b.train), len(b.val)) == (1437, 360)
    assert b.val.x.display.endswith("test_set_x") and b.train.classes == list("0123456789")
    b = fdata.load_data(fx("data/digits.npz"), val_split=0.25)
    assert (len(b.train), len(b.val)) == (1078, 359)
    np.testing.assert_array_equal(b.val.y.read(0, 3),
                                  np.load(fx("data/digits.npz"))["y"][1078:1081])
    b = fdata.load_data(fx("data/digits_train.csv"))
    assert b.train.x.shape == (300, 64) and b.val is None and b.notes
    with h5py.File(fx(DIGITS), "r") as f:  # CSV p{8r+c} is pixel (r, c) of the HDF5 data
        np.testing.assert_allclose(b.train.x.read(0, 2).reshape(2, 8, 8, 1),
                                   f["train_set_x"][:2], atol=1e-6)
        np.testing.assert_array_equal(b.train.y.read(0, 300), f["train_set_y"][:300])
    with pytest.raises(InputError, match="no column 'nope'"):
        fdata.load_data(fx("data/digits_train.csv"), y="nope")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["train_set_x"] = np.zeros((10, 4), np.float32)
        f["train_set_y"] = np.zeros(9, np.int64)
    with pytest.raises(InputError, match="found no x/y pair"):  # lengths differ: no pair
        fdata.load_data(bad)
    with pytest.raises(InputError, match=r"has 10 samples but .*train_set_y has 9"):
        fdata.load_data(bad, x="train_set_x", y="train_set_y")


def test_labels_and_preprocessing():
    m = fdata.MemoryArray
    assert fdata.label_info(m(np.array([0, 3, 9]), "y")).classes == 10
    oh = fdata.label_info(m(np.eye(4)[[0, 2, 3]], "y"))
    assert (oh.kind, oh.classes) == ("onehot", 4)
    assert fdata.label_info(m(np.array([0.5, 1.25]), "y")).kind == "float"
    with pytest.raises(InputError, match="y: target of sample 1 contains NaN"):
        fdata.label_info(m(np.array([0.5, np.nan]), "y"))
    x = np.random.default_rng(0).random((50, 4, 4, 3)).astype(np.float32)
    pre = fdata.Preprocess(rescale=2.0)
    pre.mean, pre.std = fdata.fit_standardize(m(x, "x"), pre, chunk=7)
    np.testing.assert_allclose(pre.mean, (2 * x).reshape(-1, 3).mean(0), rtol=1e-5)
    np.testing.assert_allclose(pre.std, (2 * x).reshape(-1, 3).std(0), rtol=1e-4)
    z = pre(x)
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
    img = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    np.testing.assert_allclose(fdata.rotate(img, np.array([90.0])), np.rot90(img, -1, (1, 2)),
                               atol=1e-4)
    np.testing.assert_allclose(fdata.rotate(img, np.array([0.0])), img)
    flipped = fdata.augment(np.repeat(img, 64, 0), np.random.default_rng(1),
                            flip="horizontal", rotation=0)
    kinds = {bool(np.array_equal(f, img[0])) for f in flipped}
    assert kinds == {True, False}  # some flipped, some not
    assert all(np.array_equal(f, img[0]) or np.array_equal(f, img[0, :, ::-1])
               for f in flipped)


def test_checkpoint_and_history_files(tmp_path):
    arrays = {"model/0": np.arange(6.0).reshape(2, 3), "optimizer/0": np.array(3)}
    records.save_checkpoint(tmp_path, 1, arrays, {"seed": 1})
    records.save_checkpoint(tmp_path, 2, {k: v + 1 for k, v in arrays.items()}, {"seed": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002.npz", "state.json"]
    state, got = records.load_checkpoint(tmp_path)
    assert state["epochs_done"] == 2
    np.testing.assert_array_equal(got["model/0"], arrays["model/0"] + 1)
    with pytest.raises(InputError, match="no checkpoint"):
        records.load_checkpoint(tmp_path / "none")
    rows = [{"epoch": 0, "phase": "head", "lr": 0.1, "logs": {"loss": 1.0}, "seconds": 1},
            {"epoch": 1, "phase": "fine-tune", "lr": 0.01,
             "logs": {"loss": 0.5, "val_loss": float("nan")}, "seconds": 1}]
    records.write_history(tmp_path, rows, {})
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,phase,lr,loss,val_loss,seconds,samples_per_s"
    assert lines[2].startswith("2,fine-tune,0.01,0.5,nan")
    assert json.loads((tmp_path / "history.json").read_text())["history"]["loss"] == [1.0, 0.5]


def test_finetune_package_imports_no_keras():
    code = ("import sys, wtransplant, wtransplant.finetuning.data, wtransplant.finetuning.records,"
            " wtransplant.finetuning.options, wtransplant.finetuning.tfextras\n"
            "assert callable(wtransplant.__getattr__)\n"
            "print(','.join(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules)"
            " or 'none')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "none"


# --------------------------------------------------------------------------------------
# helpers for the Keras-level tests


def _keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> weights of a saved model, read by Keras in a clean subprocess-free
    way (keras is imported in this test process)."""
    import keras

    m = keras.models.load_model(path)
    return {lay.name: [np.asarray(w) for w in lay.get_weights()] for lay in m.layers}


def _k2_weights(layer: str) -> list[np.ndarray]:
    """The Keras 2 file's own arrays for a layer, in Keras' weight order."""
    order = {"conv2d": ("kernel", "bias"), "conv2d_1": ("kernel", "bias"),
             "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
             "batch_normalization_1": ("gamma", "beta", "moving_mean", "moving_variance"),
             "features": ("kernel", "bias")}[layer]
    with h5py.File(fx(K2), "r") as f:
        return [f[f"model_weights/{layer}/{layer}/{v}:0"][()] for v in order]


def _archive_arrays(path: Path) -> list[np.ndarray]:
    """Every array in a .keras archive's weights file, in file order."""
    import io

    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        out = []
        f.visititems(lambda n, o: out.append((n, o[()])) if isinstance(o, h5py.Dataset)
                     else None)
    return [a for _, a in sorted(out, key=lambda t: t[0])]


# --------------------------------------------------------------------------------------
# the key test: transplanted Keras 2 CNN, new 10-way head on all ten digits


@pytest.mark.slow
def test_new_head_on_all_digits_improves_keeps_frozen_layers_and_resumes_bit_for_bit(tmp_path):
    """The transplanted digits-0-4 CNN with a new 10-way head on all ten digits. Then the
    same run (same seed, another process) killed after epoch 3 of 4, inside the unfrozen
    phase, and resumed: with op determinism on TensorFlow CPU it ends on the same weights
    bit for bit (the killed run's epochs repeat the first run's, and the resumed epoch starts
    from the same weights, optimizer moments, step counter and batch order)."""
    common = [fx(K2), "--data", fx(DIGITS), "--new-head", "10", "--trainable-from",
              "features", "--epochs", "4", "--lr", "3e-3", "--seed", "1"]
    out = tmp_path / "full" / "digits10.keras"
    r = run_cli("finetune", *common, "-o", out, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    ev = rep["evaluation"]
    # before: the 5-class head cannot be right on 5-9; the fresh 10-way head starts near chance
    assert ev["before_original_model"]["accuracy"] < 0.55
    assert ev["before"]["accuracy"] < 0.3
    assert ev["after"]["accuracy"] > 0.8
    assert ev["after"]["accuracy"] > ev["before_original_model"]["accuracy"] + 0.25
    assert rep["frozen"] == list(FROZEN) and rep["frozen_unchanged"] is True
    assert [p["trainable"] for p in rep["phases"]] == [["new_head"], ["features", "new_head"]]
    assert rep["phases"][1]["lr"] == pytest.approx(3e-4)
    # the saved archive, read by Keras: frozen layers (BN moving statistics included) are
    # the Keras 2 file's arrays bit for bit; the unfrozen layer did train
    w = _keras_weights(out)
    for layer in FROZEN:
        for got, want in zip(w[layer], _k2_weights(layer), strict=True):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(w["features"][0], _k2_weights("features")[0])
    assert w["new_head"][0].shape == (32, 10)
    # the saved model computes the accuracy the report says
    import keras

    m = keras.models.load_model(out)
    with h5py.File(fx(DIGITS), "r") as f:
        x, y = f["test_set_x"][()], f["test_set_y"][()]
    acc = float((m.predict(x, verbose=0).argmax(-1) == y).mean())
    assert acc == pytest.approx(ev["after"]["accuracy"], abs=1e-6)
    run_dir = out.parent / "digits10.finetune"
    hist = (run_dir / "history.csv").read_text().splitlines()
    assert len(hist) == 5 and hist[0].startswith("epoch,phase,lr,accuracy,loss,val_accuracy")
    assert json.loads((run_dir / "history.json").read_text())["history"]["val_accuracy"][-1] \
        == pytest.approx(ev["after"]["accuracy"])
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (run_dir / "checkpoints").exists()  # removed after a run that ended well

    # interrupted after epoch 3, resumed
    part = tmp_path / "part" / "digits10.keras"
    r = run_cli("finetune", *common, "-o", part, "--quiet", "--no-plot",
                env={"WTRANSPLANT_FINETUNE_CRASH_AFTER": "3"})
    assert r.returncode == 75, r.stderr[-2000:]
    assert not part.exists()  # OUT is written only when a run ends well
    state = json.loads((part.parent / "digits10.finetune" / "checkpoints" / "state.json")
                       .read_text())
    assert (state["epochs_done"], state["resume_phase"], state["resume_epoch"]) == (3, 1, 3)
    other = [a if a != "1" else "2" for a in common]  # --seed 2
    r = run_cli("finetune", *other, "-o", part, "--resume")
    assert_one_line_error(r, 2, "resume: the interrupted run had seed=1, this one seed=2")
    r = run_cli("finetune", *common, "-o", part, "--resume", "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep2 = json.loads(r.stdout)
    assert rep2["resumed_from_epoch"] == 3 and rep2["epochs_run"] == 4
    a, b = _archive_arrays(out), _archive_arrays(part)
    assert len(a) == len(b) > 10
    for x1, x2 in zip(a, b, strict=True):
        np.testing.assert_array_equal(x1, x2)
    hb = json.loads((part.parent / "digits10.finetune" / "history.json").read_text())
    assert hb["history"] == json.loads((run_dir / "history.json").read_text())["history"]
    assert rep2["evaluation"] == rep["evaluation"]


def _digits_with(tmp_path, name, **bad):
    data = tmp_path / name
    with h5py.File(fx(DIGITS), "r") as f, h5py.File(data, "w") as g:
        x = f["train_set_x"][()]
        for i, v in bad.items():
            x[int(i[1:])] = v
        g["train_set_x"], g["train_set_y"] = x, f["train_set_y"][()]
    return data


@pytest.mark.slow
def test_nonfinite_sample_is_named_or_skipped_and_counted(tmp_path):
    # whatever the kernels do with it (oneDNN's AVX-512 max pooling drops a NaN), a NaN
    # sample is found in the data, not hoped for in the loss
    data = _digits_with(tmp_path, "nan.h5", s100=np.nan)
    out = tmp_path / "m.keras"
    common = ("finetune", fx(K2), "--data", data, "--new-head", "10", "--epochs", "1",
              "--seed", "1", "--quiet", "--no-plot")
    r = run_cli(*common, "-o", out)
    assert_one_line_error(r, 2, f"{data}:train_set_x: sample 100 contains NaN")
    assert not out.exists()
    r = run_cli(*common, "--skip-nonfinite", "--json", "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["skipped_nonfinite"] == {"samples": 1,
                                        "by_array": {f"{data}:train_set_x": [100]}}
    assert out.exists()
    import keras

    w = keras.models.load_model(out).get_weights()
    assert all(np.isfinite(a).all() for a in w)


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_writes_no_model(tmp_path):
    # the second line of defence, with a NaN no kernel can hide: in the output layer's bias
    # (into the logits, where every softmax cross-entropy kernel propagates it); the data
    # are digits 0-4, the classes of the model's own 5-way head
    import keras

    r = run_cli("rebuild", fx(K2), "-o", tmp_path / "k2.keras")
    assert r.returncode == 0, r.stderr[-2000:]
    model = keras.models.load_model(tmp_path / "k2.keras")
    head = model.layers[-1]
    k, b = head.get_weights()
    b[0] = np.nan
    head.set_weights([k, b])
    model.save(tmp_path / "nanbias.keras")
    data = tmp_path / "digits04.h5"
    with h5py.File(fx(DIGITS), "r") as f, h5py.File(data, "w") as g:
        y = f["train_set_y"][()]
        g["train_set_x"], g["train_set_y"] = f["train_set_x"][()][y < 5], y[y < 5]
    out = tmp_path / "m.keras"
    r = run_cli("finetune", tmp_path / "nanbias.keras", "--data", data, "--epochs", "2",
                "--seed", "1", "--quiet", "-o", out)
    line = assert_one_line_error(r, 1, "training diverged", "the loss became nan")
    assert "nothing was saved" in line
    assert not out.exists()
    rep = json.loads((tmp_path / "m.finetune" / "report.json").read_text())
    assert rep["status"] == "diverged"


@pytest.mark.slow
def test_bad_input_is_one_line_naming_file_and_dataset(tmp_path):
    r = run_cli("finetune", fx(K2), "--data", fx(DIGITS), "--x", "train_set_x", "--y",
                "labels", "-o", tmp_path / "m.keras")
    assert_one_line_error(r, 2, "digits.h5", "'labels'")
    assert not (tmp_path / "m.keras").exists()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


DIST = ["--new-head", "10", "--trainable-from", "conv2d_1", "--train-bn", "--epochs", "2",
        "--lr", "3e-3", "--batch-size", "64", "--seed", "1", "--no-plot", "--quiet"]


@pytest.fixture
def one_device_run(tmp_path):
    """1280 training samples (batches of 64, no partial batch) and the weights of a run
    on one device, in this process; a trainable BatchNormalization layer included."""
    import wtransplant

    z = np.load(fx("data/digits.npz"))
    data = tmp_path / "sub.npz"
    np.savez(data, x=z["x"][:1280], y=z["y"][:1280], x_val=z["x_val"], y_val=z["y_val"])
    out = tmp_path / "single.keras"
    wtransplant.finetune(str(fx(K2)), str(data), new_head=10, trainable_from="conv2d_1",
                         train_bn=True, epochs=2, lr=3e-3, batch_size=64, seed=1,
                         output=str(out), plot=False, progress=False)
    return data, _archive_arrays(out)


def _assert_same_training(ref, path):
    got = _archive_arrays(path)
    assert len(got) == len(ref)
    for a, b in zip(ref, got, strict=True):  # float32 sums in another order
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_computes_what_one_device_computes(tmp_path,
                                                                        one_device_run):
    """One CPU split into two logical devices (before TensorFlow starts its devices, hence
    in a subprocess); BatchNormalization synchronised across the replicas."""
    data, ref = one_device_run
    out = tmp_path / "mirrored.keras"
    r = run_cli("finetune", fx(K2), "--data", data, *DIST, "--strategy", "mirrored",
                "--cpu-devices", "2", "-o", out, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["strategy"]["replicas"] == 2 and len(rep["strategy"]["devices"]) == 2
    _assert_same_training(ref, out)


@pytest.mark.slow
def test_multiworker_with_two_local_workers_computes_what_one_device_computes(
        tmp_path, one_device_run):
    """Two worker processes on this machine from TF_CONFIG (Keras' fit patched as
    tfextras.multiworker_patches says); each reads half of every batch."""
    data, ref = one_device_run
    ports = _free_ports(2)
    exe = Path(sys.executable).parent / "wtransplant"
    procs = []
    for i in range(2):
        cfg = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
               "task": {"type": "worker", "index": i}}
        env = dict(os.environ, TF_CONFIG=json.dumps(cfg))
        procs.append(subprocess.Popen(
            [str(exe), "finetune", str(fx(K2)), "--data", str(data), *DIST, "--strategy",
             "multiworker", "-o", str(tmp_path / f"worker{i}.keras"), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    reps = [json.loads(o) for o, _ in outs]
    assert [r["strategy"]["workers"] for r in reps] == [2, 2]
    assert reps[0]["evaluation"]["after"] == reps[1]["evaluation"]["after"]
    assert not (tmp_path / "worker1.keras").exists()  # only the chief writes
    _assert_same_training(ref, tmp_path / "worker0.keras")


# --------------------------------------------------------------------------------------
# the library call, in this process


@pytest.fixture(scope="module")
def k2_model():
    from wtransplant.building.transplanting import rebuild_file

    def make():
        return rebuild_file(fx(K2), progress=False)[0]

    return make


@pytest.mark.slow
def test_library_call_with_arrays_returns_model_and_history(tmp_path, k2_model):
    import keras

    import wtransplant

    with h5py.File(fx(DIGITS), "r") as f:
        x, y = f["train_set_x"][:400], f["train_set_y"][:400]
        xv, yv = f["test_set_x"][()], f["test_set_y"][()]
    keep = y < 5  # the original head's classes: fine-tune it as it is
    model, hist = wtransplant.finetune(
        k2_model(), (x[keep], y[keep]), val_data=(xv[yv < 5], yv[yv < 5]), epochs=2,
        batch_size=32, trainable="^features$", schedule="cosine", seed=3,
        precision="mixed", tensorboard=str(tmp_path / "tb"), progress=False)
    assert isinstance(model, keras.Model)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(hist.history["loss"]) == 2 == len(hist.epochs)
    rep = hist.report
    assert rep["phases"] == [{"name": "train", "epochs": [1, 2], "lr": 1e-3,
                              "trainable": ["features", "head"]}]
    assert rep["evaluation"]["after"]["accuracy"] > 0.9  # it knew digits 0-4 already
    assert "before_original_model" not in rep["evaluation"]
    # mixed precision: float16 compute, the output layer in float32, loss scaling -- where
    # the CPU's kernels run float16 convolutions (oneDNN has none for AVX2-only CPUs: then
    # the run is float32 and says why, instead of failing at its first batch)
    assert model.layers[-1].dtype_policy.name == "float32"
    if rep["precision"]["policy"] == "mixed_float16":
        assert model.get_layer("features").dtype_policy.name == "mixed_float16"
        assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    else:
        assert rep["precision"]["policy"] == "float32"
        assert "cannot run float16 convolutions" in rep["precision"]["why"]
        assert rep["precision"]["why"] in rep["notes"]
        assert model.get_layer("features").dtype_policy.name == "float32"
    assert hist.epochs[1]["lr"] < hist.epochs[0]["lr"]  # cosine decay
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        assert any("tensorboard" in n for n in rep["notes"])
    else:
        assert any((tmp_path / "tb").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_library_csv_image_folder_and_keras_archive_inputs(tmp_path, k2_model):
    import keras
    from PIL import Image

    import wtransplant
    from wtransplant.building.transplanting import rebuild_file

    # CSV: 64 feature columns reshaped to the model's (8, 8, 1); the tail for validation
    _m, hist = wtransplant.finetune(k2_model(), str(fx("data/digits_train.csv")), new_head=10,
                                    val_split=0.2, epochs=1, progress=False)
    rep = hist.report
    assert rep["data"]["train"]["samples"] == 240 and rep["data"]["val"]["samples"] == 60
    assert any("reshaped to the model's input (8, 8, 1)" in n for n in rep["notes"])
    # an image folder: class subfolders, decoded batch by batch, 1/255, flips and rotations
    root = tmp_path / "imgs"
    with h5py.File(fx(DIGITS), "r") as f:
        x, y = f["train_set_x"][:200], f["train_set_y"][:200]
    for k, cls in enumerate(("three", "seven")):
        (root / cls).mkdir(parents=True)
        for i, a in enumerate(x[y == (3, 7)[k]][:12]):
            Image.fromarray((a[..., 0] * 255).astype(np.uint8)).save(root / cls / f"{i}.png")
    _m, hist = wtransplant.finetune(k2_model(), str(root), new_head=2, val_split=0.25,
                                    flip="horizontal", rotation=10, epochs=1, batch_size=8,
                                    progress=False)
    rep = hist.report
    assert rep["data"]["classes"] == ["seven", "three"] and rep["task"] == "classification"
    assert rep["preprocess"]["rescale"] == pytest.approx(1 / 255)
    assert rep["model"]["head"] == {"name": "new_head", "units": 2, "activation": "softmax"}
    # a .keras archive as MODEL; its 5-unit head cannot take labels up to 9
    arch = tmp_path / "k2.keras"
    rebuild_file(fx(K2), output=arch, progress=False)
    with pytest.raises(InputError, match=r"labels go up to 9 but the output layer 'head' has "
                                         r"5 unit\(s\); use new_head 10"):
        wtransplant.finetune(str(arch), str(fx(DIGITS)), progress=False)
    model, hist = wtransplant.finetune(str(arch), str(fx(DIGITS)), new_head=10,
                                       trainable_from=-2, head_epochs=1, epochs=2,
                                       output=str(tmp_path / "out.keras"), progress=False)
    assert keras.models.load_model(tmp_path / "out.keras").output_shape == (None, 10)
    assert (tmp_path / "out.finetune" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_early_stopping_and_restore_best(k2_model):
    """Labels that carry no signal: the validation loss gets worse once the head starts
    fitting noise, early stopping ends the run, and --restore-best ends on the best epoch's
    weights (their validation loss is the best one of the history)."""
    import wtransplant

    rng = np.random.default_rng(0)
    with h5py.File(fx(DIGITS), "r") as f:
        x, xv = f["train_set_x"][:300], f["test_set_x"][:200]
    y, yv = rng.integers(0, 10, 300), rng.integers(0, 10, 200)
    _m, hist = wtransplant.finetune(k2_model(), (x, y), val_data=(xv, yv), new_head=10,
                                    trainable_from="features", head_epochs=0, epochs=30,
                                    lr=1e-2, batch_size=16, patience=2, restore_best=True,
                                    seed=4, progress=False)
    rep = hist.report
    val = hist.history["val_loss"]
    assert 3 <= rep["epochs_run"] < 30
    assert any("early stopping after epoch" in n for n in rep["notes"])
    best = int(np.argmin(val))
    assert best == len(val) - 3  # two epochs without improvement, then stop
    assert any(f"restored the weights of epoch {best + 1}" in n for n in rep["notes"])
    assert rep["evaluation"]["after"]["loss"] == pytest.approx(val[best], rel=1e-5)


@pytest.mark.slow
def test_library_input_errors(k2_model):
    import wtransplant

    m = k2_model()
    x = np.zeros((20, 8, 8, 1), np.float32)
    y = np.zeros(20, np.int64)
    cases = [
        (dict(data=(x, y[:19])), r"x has 20 samples but y has 19"),
        (dict(data=(x[:, :7], y)), r"samples of shape \(7, 8, 1\) do not fit"),
        (dict(data=(x, y), trainable_from="nope"), r"^trainable_from 'nope': no such layer"),
        (dict(data=(x, y), trainable_from=9), r"the model has 8 layers"),
        (dict(data=(x, y), trainable="zzz"), r"^trainable 'zzz' matches no layer"),
        (dict(data=(x, y), val_data=(x, y), val_split=0.5), r"not both"),
        (dict(data=(x, y + 0.5), new_head=3, task="classification"),
         r"targets are real numbers"),
        (dict(data=(x, y + 0.5), new_head=3), r"targets of shape \(\) do not fit"),
        (dict(data=(x, y), resume=True, run_dir="/nonexistent-run"), r"no checkpoint"),
        (dict(data=(x, y), flip="horizontal", epochs=0), r"^epochs must be at least 1"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputError, match=msg):
            wtransplant.finetune(m, kw.pop("data"), progress=False, **kw)


@pytest.mark.slow
def test_runs_under_the_jax_backend(tmp_path):
    pytest.importorskip("jax")
    r = run_cli("finetune", fx(K2), "--data", fx(DIGITS), "--new-head", "10",
                "--trainable-from", "features", "--epochs", "2", "--lr", "3e-3", "--seed",
                "1", "--no-plot", "-o", tmp_path / "m.keras", "--json",
                env={"KERAS_BACKEND": "jax"})
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["backend"] == "jax" and rep["frozen_unchanged"] is True
    assert rep["evaluation"]["after"]["accuracy"] > rep["evaluation"]["before"]["accuracy"] + 0.3
