"""Hostile input: nothing in a file may run code, reach other files, or allocate without
bound. Every refusal is one line on stderr with exit code 2, and the marker files a
successful attack would create never appear."""

from __future__ import annotations

import base64
import json
import marshal
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, fx, run_cli


def _lambda_model(path: Path, marker: Path) -> None:
    """A Keras 2 full-model H5 whose Lambda layer, if its bytecode were ever loaded and
    called, would create ``marker`` (the way Keras 2 serialises lambdas: marshal+base64)."""

    def evil(x):
        import pathlib

        pathlib.Path(MARKER).write_text("pwned")  # noqa: F821
        return x

    code = base64.b64encode(marshal.dumps(evil.__code__)).decode()
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4],
                                                "dtype": "float32", "name": "in"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 3}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": [code, None, None],
                                            "function_type": "lambda", "module": "__main__",
                                            "arguments": {"MARKER": str(marker)}}}]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        f.attrs["keras_version"] = "2.15.0"
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [b"d"]
        d = g.create_group("d")
        d.attrs["weight_names"] = [b"d/kernel:0", b"d/bias:0"]
        d.create_dataset("d/kernel:0", data=np.ones((4, 3), np.float32))
        d.create_dataset("d/bias:0", data=np.ones(3, np.float32))


def _lambda_archive(path: Path, marker: Path) -> None:
    """A Keras 3 archive whose config holds a Lambda (and an inner weights file)."""
    cfg = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer",
         "config": {"batch_shape": [None, 4], "name": "in"}},
        {"module": "keras.layers", "class_name": "Lambda",
         "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
             "code": "", "defaults": None, "closure": None}}}}]}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(cfg))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("model.weights.h5", fx("keras3/k3_mlp.weights.h5").read_bytes())


def test_lambda_in_keras2_model_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "lambda.h5"
    _lambda_model(path, marker)
    r = run_cli("inspect", path)  # inspect only reads metadata: fine
    assert r.returncode == 0, r.stderr
    for args in (("rebuild", path, "-o", tmp_path / "o.keras"),
                 ("export", path, "--format", "onnx", "-o", tmp_path / "o.onnx"),
                 ("verify", path, fx("keras3/k3_mlp.keras"))):
        r = run_cli(*args)
        assert_one_line_error(r, 2, "Lambda")
    assert not marker.exists()
    assert not (tmp_path / "o.keras").exists() and not (tmp_path / "o.onnx").exists()


def test_real_tf_keras_lambda_file_refused():
    """The fixture written by tf_keras itself (tf_keras' own load_model would run it)."""
    assert_one_line_error(run_cli("rebuild", fx("keras2/k2_lambda_model.h5"), "--no-save"),
                          2, "Lambda")


def test_lambda_in_keras_archive_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "lambda.keras"
    _lambda_archive(path, marker)
    for args in (("rebuild", path, "--no-save"),
                 ("export", path, "--format", "h5", "-o", tmp_path / "o.h5"),
                 ("verify", path, fx("keras3/k3_mlp.keras"))):
        assert_one_line_error(run_cli(*args), 2, "Lambda")
    assert not marker.exists()


def test_yaml_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"version: 1\nsource: !!python/object/apply:os.system ['touch {marker}']\n"
                    f"model: {{input_shape: [4], layers: [{{class: Dense, units: 1}}]}}\n")
    assert_one_line_error(run_cli("rebuild", "--spec", spec, "--no-save"), 2, "Python tags")
    assert not marker.exists()
    spec.write_text("version: 1\nsource: !!python/name:os.system\n")
    assert_one_line_error(run_cli("rebuild", "--spec", spec, "--no-save"), 2)
    assert not marker.exists()


def test_external_link_vds_and_external_storage_not_followed(tmp_path):
    for name, target in (("external_link.h5", "/secret"), ("vds_outside.h5", "/virtual"),
                         ("external_storage.h5", "/ext")):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(
            f"version: 1\nsource: {fx('broken/' + name)}\nconvention: plain\n"
            f"model: {{input_shape: [3], layers: [{{class: Dense, name: d, units: 4}}]}}\n"
            f"weights: {{d/kernel: {{from: {target}, transpose: [1, 0]}}}}\n"
            f"options: {{allow_missing: ['d/bias']}}\n")
        r = run_cli("rebuild", "--spec", spec, "--no-save")
        assert_one_line_error(r, 2, target)
        assert "not followed" in r.stderr or "not read" in r.stderr


def test_zip_slip_archive_refused_and_nothing_written_outside(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for args in (("inspect", fx("broken/zip_slip.keras")),
                 ("rebuild", fx("broken/zip_slip.keras"), "--no-save"),
                 ("export", fx("broken/zip_slip.keras"), "--format", "h5", "-o",
                  work / "o.h5"),
                 ("verify", fx("broken/zip_slip.keras"), fx("keras3/k3_mlp.keras"))):
        assert_one_line_error(run_cli(*args), 2, "escapes the archive")
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    assert not (fx("broken").parent / "evil.txt").exists()


def test_huge_declared_shape_refused_before_allocation(tmp_path):
    """A 3.6 TiB dataset declared in a 2 KiB file: refused from its metadata; the process
    never grows (checked through its peak RSS)."""
    code = (
        "import resource, sys\n"
        "from wtransplant.reading.h5io import open_source, read_dataset\n"
        "from wtransplant.errors import UnsafeInputError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"src = open_source({str(fx('broken/huge_shape.h5'))!r})\n"
        "huge = [n for n in src.h5 if src.h5[n].shape == (10**12,)][0]\n"
        "try:\n"
        "    read_dataset(src, huge)\n"
        "    print('READ')\n"
        "except UnsafeInputError as e:\n"
        "    print('refused', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    word, grew_kib = r.stdout.split()
    assert word == "refused" and int(grew_kib) < 50 * 1024  # under 50 MiB of growth
    spec = tmp_path / "huge.yaml"
    spec.write_text(f"version: 1\nsource: {fx('broken/huge_shape.h5')}\nconvention: plain\n"
                    f"model: {{input_shape: [4], layers: [{{class: Dense, name: d, units: 3}}]}}"
                    f"\nweights: {{d/kernel: {{from: huge, convert: false}}}}\n")
    r = run_cli("rebuild", "--spec", spec, "--no-save")
    assert_one_line_error(r, 2)


def test_pickled_reference_data_is_not_loaded(tmp_path):
    """References are read with allow_pickle=False: an object array is refused."""
    p = tmp_path / "x.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = run_cli("verify", fx("keras3/k3_mlp.keras"), "--inputs", p, "--expected", p)
    assert_one_line_error(r, 2)


@pytest.mark.parametrize("path", ["broken/truncated.h5", "broken/not_hdf5.h5",
                                  "broken/empty.h5"])
def test_every_command_refuses_broken_files_in_one_line(path, tmp_path):
    for args in (("inspect", fx(path)), ("spec", fx(path)),
                 ("rebuild", fx(path), "--no-save"),
                 ("export", fx(path), "--format", "onnx", "-o", tmp_path / "o.onnx"),
                 ("verify", fx(path), fx("keras3/k3_mlp.keras"))):
        assert_one_line_error(run_cli(*args), 2, Path(path).name)
