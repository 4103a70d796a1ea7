"""Issue 12, hostile input round two: one test (or a few) per class, each on a committed
hand-made file from fixtures/hostile/ (written by fixtures/make_hostile.py). Every refusal
is one line on stderr, exit 2, no traceback, the input unchanged, nothing written."""

from __future__ import annotations

import pytest
from conftest import assert_one_line_error, fx, run_cli, sha256

from wtransplant.errors import InputError, UnsafeInputError

# --------------------------------------------------------------------------------------
# 1. configs are data

CONFIG_FILES = {
    "hostile/k2_vocab_path.h5": "vocabulary='/etc/passwd'",
    "hostile/k3_vocab_path.keras": "vocabulary='/etc/shadow'",
    "hostile/k3_smuggled_fn.keras": "keras.src.layers.core.lambda_layer",
    "hostile/k3_tfsm.keras": "TFSMLayer",
    "hostile/k3_registered.keras": "module 'os'",
    "hostile/deep_config.h5": "nested",
}


@pytest.mark.parametrize("rel", sorted(CONFIG_FILES))
def test_config_naming_files_or_code_refused_by_every_loader(rel):
    """In-process, fast: the artifact loader (verify/export) and rebuild_file (rebuild,
    finetune's .h5 path) both refuse before Keras sees the config."""
    from wtransplant.finetuning.train import load_model
    from wtransplant.runtimes import load_artifact

    path = fx(rel)
    before = sha256(path)
    for load in (load_artifact, load_model):
        with pytest.raises(InputError) as ei:
            load(path)
        assert CONFIG_FILES[rel] in str(ei.value), str(ei.value)
        assert "root:" not in str(ei.value)  # no line of the named file is ever quoted
    if rel.endswith(".h5"):
        from wtransplant.building.transplanting import rebuild_file

        with pytest.raises(InputError, match=CONFIG_FILES[rel].replace("(", r"\(")):
            rebuild_file(path, output=None)
    assert sha256(path) == before


def test_config_refusals_on_the_command_line(tmp_path):
    out = tmp_path / "o.keras"
    for rel, needle in (("hostile/k2_vocab_path.h5", "/etc/passwd"),
                        ("hostile/k3_smuggled_fn.keras", "lambda_layer")):
        for args in (("rebuild", fx(rel), "-o", out),
                     ("export", fx(rel), "--format", "keras", "-o", out)):
            line = assert_one_line_error(run_cli(*args), 2, needle)
            assert "root:" not in line
        assert not out.exists()


@pytest.mark.parametrize("rel,needle", [("hostile/spec_vocab_path.yaml", "/etc/shadow"),
                                        ("hostile/spec_nested_module.yaml", "subprocess")])
def test_spec_layer_arguments_naming_files_or_modules_refused(rel, needle):
    from wtransplant.building.transplanting import rebuild

    with pytest.raises(UnsafeInputError, match=needle):
        rebuild(fx(rel), output=None)


def test_real_configs_still_pass_the_allow_list():
    """The allow-list is not a deny-all: every architecture Keras itself writes for the
    layers wtransplant supports (with regularizers, constraints, initializers, wrappers,
    attention, activations as functions, a compiled optimizer with a schedule) passes."""
    import json

    import keras

    from wtransplant.safety.configs import check_config

    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu",
                            kernel_regularizer=keras.regularizers.L2(1e-3),
                            kernel_constraint=keras.constraints.MaxNorm(2))(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, activation=keras.activations.gelu)(x)
    x = keras.layers.Reshape((-1, 4))(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True))(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(2))(x)
    x = keras.layers.MultiHeadAttention(2, 2)(x, x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(2, kernel_initializer=keras.initializers.HeNormal(seed=1))(x)
    m = keras.Model(i, x)
    m.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)), loss="mse",
        metrics=["mae", keras.metrics.AUC()])
    cfg = json.loads(m.to_json())
    cfg["compile_config"] = m.get_compile_config()
    check_config(keras.saving.serialize_keras_object(m), "functional")
    check_config(cfg, "functional")
    lookup = keras.Sequential([keras.Input((1,), dtype="string"),
                               keras.layers.StringLookup(vocabulary=["a", "b"])])
    check_config(json.loads(lookup.to_json()), "inline vocabulary")


def test_deserialisation_runs_in_keras_safe_mode(monkeypatch):
    """The Keras 2 fallback (rebuild from model_config: verify/export/finetune of a file
    load_model refuses) deserialises inside Keras' safe-mode scope."""
    import keras
    from keras.src.saving import serialization_lib

    from wtransplant.building.transplanting import rebuild_file

    seen = []
    real = keras.legacy.saving.deserialize_keras_object

    def spy(*a, **kw):
        seen.append(serialization_lib.in_safe_mode())
        return real(*a, **kw)

    monkeypatch.setattr(keras.legacy.saving, "deserialize_keras_object", spy)
    rebuild_file(fx("keras2/k2_rnn_model.h5"), output=None, progress=False)
    assert seen and all(seen), seen


# --------------------------------------------------------------------------------------
# 2. outputs never overwrite inputs


def _sums(folder):
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_output_that_is_an_input_refused_by_name_symlink_and_hard_link(tmp_path):
    import os
    import shutil

    x = tmp_path / "X.h5"
    shutil.copy(fx("keras2/k2_mlp_weights.h5"), x)
    b = tmp_path / "b.keras"
    shutil.copy(fx("keras3/k3_mlp.keras"), b)
    os.symlink(x.name, tmp_path / "L.h5")
    os.link(x, tmp_path / "H.h5")
    before = _sums(tmp_path)
    cases = [("spec", x, "-o", x), ("spec", x, "-o", tmp_path / "L.h5"),
             ("spec", tmp_path / "L.h5", "-o", tmp_path / "H.h5"),
             ("rebuild", b, "-o", tmp_path / "." / "b.keras"),
             ("export", b, "--format", "keras", "-o", b),
             ("finetune", b, "--data", x, "-o", b),
             ("verify", b, b, "--report", b)]
    for args in cases:  # the CLI's own same-name check or the symlink/inode one
        line = assert_one_line_error(run_cli(*args), 2)
        assert "would overwrite the input" in line or "also an input" in line, line
    assert _sums(tmp_path) == before


def test_library_refuses_output_that_is_an_input(tmp_path):
    """The same guard without the command line: rebuild/export/finetune check before any
    work; a SavedModel folder holding the input counts as the input."""
    import shutil

    from wtransplant.building.transplanting import rebuild
    from wtransplant.exporting.export import plan_outputs
    from wtransplant.finetuning.train import finetune

    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nsource: w.h5\nconvention: keras\nmodel:\n  input_shape: [4]\n"
                    "  layers: [{class: Dense, name: d, units: 3}]\n")
    shutil.copy(fx("keras3/k3_mlp.weights.h5"), tmp_path / "w.h5")
    b = tmp_path / "b.keras"
    shutil.copy(fx("keras3/k3_mlp.keras"), b)
    before = _sums(tmp_path)
    for call in (lambda: rebuild(spec, output=tmp_path / "w.h5"),
                 lambda: rebuild(spec, output=None, report_path=spec),
                 lambda: plan_outputs(str(b), "keras", b),
                 lambda: plan_outputs(str(spec), "h5", tmp_path / "w.h5"),
                 lambda: plan_outputs(str(b), "savedmodel", tmp_path),
                 lambda: finetune(str(b), str(tmp_path / "w.h5"), output=tmp_path / "w.h5")):
        with pytest.raises(InputError, match="would overwrite the input|would be replaced"):
            call()
    assert _sums(tmp_path) == before


def test_rebuild_default_output_never_replaces_its_input(tmp_path):
    import shutil

    b = tmp_path / "b.keras"
    shutil.copy(fx("keras3/k3_mlp.keras"), b)
    before = sha256(b)
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([str(Path(sys.executable).parent / "wtransplant"), "rebuild", b.name,
                        "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sha256(b) == before
    assert (tmp_path / "b.rebuilt.keras").is_file()


# --------------------------------------------------------------------------------------
# 3. untrusted graphs


def test_savedmodel_that_writes_files_refused_before_loading(tmp_path):
    """The committed SavedModel really writes ``pwned.txt`` into the current directory
    when run (the second half shows it, with --trust-graph); without that flag verify
    refuses it from its op list, before TensorFlow loads it."""
    import subprocess
    import sys
    from pathlib import Path

    sm = fx("hostile/sm_write_file")
    exe = str(Path(sys.executable).parent / "wtransplant")
    r = subprocess.run([exe, "verify", sm, sm], capture_output=True, text=True, cwd=tmp_path,
                       timeout=600)
    assert_one_line_error(r, 2, "WriteFile", "--trust-graph")
    assert not (tmp_path / "pwned.txt").exists()
    r = subprocess.run([exe, "verify", sm, sm, "--trust-graph", "--random", "2"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "pwned.txt").exists()  # the fixture is a real attack


def test_graph_check_reads_ops_as_data(tmp_path):
    import shutil

    import keras

    from wtransplant.runtimes import load_artifact
    from wtransplant.safety.graphs import check_savedmodel, graph_ops

    with pytest.raises(UnsafeInputError, match="WriteFile"):
        load_artifact(fx("hostile/sm_write_file"))
    assert "WriteFile" in graph_ops(fx("hostile/sm_write_file"))
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                          keras.layers.BatchNormalization(), keras.layers.Reshape((3, 1)),
                          keras.layers.GRU(2)])
    m.export(str(tmp_path / "ok"), verbose=False)
    ops = graph_ops(tmp_path / "ok")
    assert {"MatMul", "While"} <= set(ops)
    check_savedmodel(tmp_path / "ok")  # Keras' own export passes
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    data = (bad / "saved_model.pb").read_bytes()
    (bad / "saved_model.pb").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|not a SavedModel"):
        check_savedmodel(bad)


def test_tflite_with_file_writing_flex_op_refused(tmp_path):
    """LiteRT: the Flex (TensorFlow) ops a .tflite asks for are listed from its bytes;
    FlexWriteFile is refused before an interpreter is created."""
    from wtransplant.runtimes import load_artifact, precheck
    from wtransplant.safety.graphs import tflite_flex_ops

    f = fx("hostile/flex_write_file.tflite")
    assert "WriteFile" in tflite_flex_ops(f)
    for call in (lambda: precheck(f), lambda: load_artifact(f)):
        with pytest.raises(UnsafeInputError, match="WriteFile"):
            call()
    assert_one_line_error(run_cli("verify", f, f), 2, "WriteFile", "--trust-graph")


# --------------------------------------------------------------------------------------
# 4. polyglots: one parser per file


@pytest.mark.parametrize("rel,where", [("hostile/polyglot_appended.h5", "offset 0"),
                                       ("hostile/polyglot_userblock.keras", "offset 8192")])
def test_zip_and_hdf5_polyglot_refused_everywhere(rel, where, tmp_path):
    import h5py

    path = fx(rel)
    assert h5py.is_hdf5(str(path))  # the file really is both
    import zipfile

    assert "config.json" in zipfile.ZipFile(path).namelist()
    before = sha256(path)
    assert_one_line_error(run_cli("inspect", path), 2, "polyglot", where)
    from wtransplant.finetuning.train import load_model
    from wtransplant.reading.h5io import open_source
    from wtransplant.runtimes import load_artifact

    for call in (lambda: open_source(path), lambda: load_artifact(path),
                 lambda: load_model(path)):
        with pytest.raises(UnsafeInputError, match="polyglot"):
            call()
    assert sha256(path) == before


def test_format_and_suffix_must_agree(tmp_path):
    """Keras chooses its reader by suffix: a zip named .h5 or an HDF5 file named .keras
    would be checked as one format and loaded as another; refused."""
    import shutil

    from wtransplant.runtimes import artifact_kind

    z = tmp_path / "m.h5"
    shutil.copy(fx("keras3/k3_mlp.keras"), z)
    h = tmp_path / "m.keras"
    shutil.copy(fx("keras2/k2_cnn_model.h5"), h)
    for p, needle in ((z, "zip archive named"), (h, "HDF5 file named .keras")):
        with pytest.raises(InputError, match=needle):
            artifact_kind(p)


def test_hdf5_data_with_chance_zip_bytes_is_not_a_polyglot(tmp_path):
    """The zip check wants a real end-of-directory record pointing at a central
    directory: an HDF5 file whose data holds the 4 signature bytes is fine."""
    import h5py
    import numpy as np

    from wtransplant.safety.polyglot import check_single_format

    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.frombuffer(b"PK\x05\x06" * 64 + b"PK\x03\x04" * 64, np.uint8)
    check_single_format(p)


# --------------------------------------------------------------------------------------
# 5. strings from files are neutralised


def _control_bytes(text: str) -> set:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # rich's own colours on a terminal
    return {c for c in text if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f
            or c in "\u2028\u2029\u202e"}


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1", "COLUMNS": "200"}],
                         ids=["pipe", "terminal"])
def test_tree_of_hostile_names_renders_escaped(env):
    r = run_cli("inspect", fx("hostile/names_escape.h5"), env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and not r.stderr.strip()
    out = r.stdout
    assert _control_bytes(out) == set(), _control_bytes(out)
    lines = out.splitlines()
    forged = [ln for ln in lines if ln.lstrip().startswith("format:")]
    assert len(forged) == 1 and "generic-hdf5" in forged[0], forged
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    for needle in (r"red\x1b[31mALERT\x1b[0m", r"bell\x07\x07", r"cr\roverwritten",
                   r"x\nformat: keras-legacy-model", r"rtl\u202etxt.exe",
                   r"value\x1b]0;title\x07 forged: line", r"layer\x1b[2J/", "oops]"):
        assert needle in plain, needle


def test_mat_userblock_newline_never_becomes_yaml():
    import yaml

    r = run_cli("spec", fx("hostile/mat_userblock_yaml.mat"))
    assert r.returncode == 0, r.stderr
    assert _control_bytes(r.stdout) == set()
    data = yaml.safe_load(r.stdout)
    assert "options" not in data, data
    assert r"writer: x\noptions" in r.stdout  # shown, as a comment, escaped
    r = run_cli("inspect", fx("hostile/mat_userblock_yaml.mat"), env={"FORCE_COLOR": "1"})
    assert r.returncode == 0 and _control_bytes(r.stdout) == set()


def test_draft_writer_neutralises_every_line():
    import yaml

    from wtransplant.planning.draft import _Writer

    w = _Writer()
    w.comment("writer: 2.15.0\noptions: {follow_links: true}")
    w.line("version: 1\x1b[2J")
    w.kv("source", "a\nb", "from\u2028options: x")
    text = w.text()
    assert text.count("\n") == 3 and _control_bytes(text) == set()
    assert "options" not in yaml.safe_load(text)


def test_error_lines_carry_no_control_characters():
    from wtransplant.errors import InputError

    e = InputError("bad name 'a\x1b]8;;http://x\x07b'\nforged", path="f\x1b[31m.h5")
    assert _control_bytes(str(e)) == set() and "\n" not in str(e)


# --------------------------------------------------------------------------------------
# 6. bounded everything


def _limited(mem_bytes: int):
    def pre():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    return pre


def _run_limited(*args, mem=2 << 30, timeout=120):
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "wtransplant")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limited(mem))


@pytest.mark.parametrize("rel,needle", [("hostile/alias_bomb.yaml", "alias bomb"),
                                        ("hostile/alias_recursive.yaml", "recursive"),
                                        ("hostile/deep_spec.yaml", "levels deep")])
def test_yaml_bombs_and_depth_refused_quickly(rel, needle):
    import time

    from wtransplant.planning.spec import load_spec

    t = time.monotonic()
    with pytest.raises(InputError, match=needle):
        load_spec(fx(rel))
    assert time.monotonic() - t < 10


def test_spec_with_bomb_on_the_command_line_in_bounded_memory():
    r = _run_limited("rebuild", "--spec", fx("hostile/alias_bomb.yaml"), "--no-save",
                     mem=3 << 30)
    assert_one_line_error(r, 2, "alias bomb")


def test_deeply_nested_groups_walk_without_recursion_error():
    for args in (("inspect", fx("hostile/deep_groups.h5")),
                 ("inspect", "--stats", "--json", fx("hostile/deep_groups.h5"))):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr[-500:]
        assert "Recursion" not in r.stderr
    assert "/g" * 1100 + "/w" in r.stdout


def test_stats_of_a_4gib_single_chunk_stay_bounded():
    """A 2 KB file declaring one 4 GiB chunk: --stats answers from the fill value, under
    a 2 GiB address-space limit, in seconds; and the block reader never asks HDF5 for
    more than one block even when a chunk is larger."""
    import h5py

    from wtransplant.reading.stats import BLOCK_BYTES, _blocks

    path = fx("hostile/big_chunk.h5")
    assert path.stat().st_size < 4096
    r = _run_limited("inspect", "--stats", "--json", path, mem=2 << 30, timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    import json

    x = {t["path"]: t for t in json.loads(r.stdout)["tensors"]}["/x"]["stats"]
    assert x["count"] == (1 << 30) - 16 and x["max"] == 0
    with h5py.File(path, "r") as f:
        ds = f["x"]
        blocks = list(_blocks(ds, BLOCK_BYTES))
        assert len(blocks) > 100
        assert all((b.stop - b.start) * 4 <= BLOCK_BYTES for b in blocks)


def test_exotic_types_in_stats_are_skipped_not_crashes():
    for args in (("inspect", "--stats", fx("hostile/odd_types.h5")),
                 ("inspect", "--stats", "--json", fx("hostile/odd_types.h5")),
                 ("spec", fx("hostile/odd_types.h5"))):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr[-500:]
        assert "internal error" not in r.stderr


@pytest.mark.parametrize("ref", ["hostile/huge_rows.npy", "hostile/huge_rows.npz:x"])
def test_npy_headers_checked_against_file_size(ref):
    from wtransplant.checking.data import load_array

    path, _, key = ref.partition(":")
    with pytest.raises(InputError, match="refused before allocating"):
        load_array(str(fx(path)) + (f":{key}" if key else ""))


def test_npy_header_on_the_command_line():
    r = _run_limited("verify", fx("keras3/k3_mlp.keras"), "--inputs",
                     fx("hostile/huge_rows.npy"), mem=6 << 30, timeout=300)
    assert_one_line_error(r, 2, "declares shape (100000000000, 10)")


def test_model_input_over_the_memory_budget_refused_before_building():
    from wtransplant.building.transplanting import rebuild

    with pytest.raises(InputError, match="memory budget"):
        rebuild(fx("hostile/big_input.yaml"), output=None)


# --------------------------------------------------------------------------------------
# 7. checks that check nothing


def test_verify_refuses_zero_samples():
    import numpy as np

    from wtransplant.checking.parity import compare
    from wtransplant.checking.verification import verify

    model = fx("keras3/k3_mlp.keras")
    x, y = fx("hostile/empty_x.npy"), fx("hostile/empty_y.npy")
    with pytest.raises(InputError, match="0 samples"):
        verify(model, inputs=str(x), expected=str(y))
    with pytest.raises(InputError, match="0 samples"):
        verify(model, other=model, inputs=str(x))
    with pytest.raises(InputError, match="0 values"):
        compare(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    assert_one_line_error(run_cli("verify", model, "--inputs", x, "--expected", y), 2,
                          "0 samples")


# --------------------------------------------------------------------------------------
# 8. regressions found by the structure-aware fuzzer


def test_fuzz_finding_archive_config_that_is_not_an_object():
    for args in (("inspect", fx("hostile/fuzz_config_list.keras")),
                 ("spec", fx("hostile/fuzz_config_list.keras"))):
        assert_one_line_error(run_cli(*args), 2, "not an object")


@pytest.mark.parametrize("layer", ["{class: Conv2D, name: c, filters: 1, kernel_size: 3}",
                                   "{class: Flatten}, {class: Dense, name: fc, units: 10}"])
def test_layer_stack_with_huge_input_refused_before_building(tmp_path, layer):
    # a Dense after the Flatten of a huge input is a huge kernel: building it would allocate
    # it, so the budget is checked before any layer is built
    import resource

    from wtransplant.building.keras_model import build_model
    from wtransplant.planning.spec import load_spec

    p = tmp_path / "s.yaml"
    p.write_text("version: 1\nsource: w.h5\nmodel:\n  input_shape: [100000, 100000, 3]\n"
                 f"  layers: [{layer}]\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="memory budget.*refused before building"):
        build_model(load_spec(p).model)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 << 10  # KiB
