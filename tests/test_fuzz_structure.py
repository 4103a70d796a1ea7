"""Structure-aware fuzzing (issue 12): Hypothesis builds well-formed but hostile HDF5
trees, Keras model configs, specs and zip layouts, instead of mutating bytes.

Each case runs in-process through the layer-1 entry points (inspect with --stats, the
tree renderer, the draft writer, the config allow-list, the spec loader, the archive
reader) and passes when they succeed or raise a WTError; a passing config must contain
nothing an independent checker calls code or a path; rendered text must contain no
control character. `make test` runs WT_FUZZ_STRUCT_CASES (default 60) cases per
generator, derandomised; `make fuzz` runs thousands with fresh randomness.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wtransplant.errors import WTError

CASES = int(os.environ.get("WT_FUZZ_STRUCT_CASES", "60"))
NIGHTLY = os.environ.get("WT_FUZZ_NIGHTLY") == "1"
SETTINGS = settings(max_examples=CASES, deadline=None, derandomize=not NIGHTLY,
                    database=None, suppress_health_check=list(HealthCheck))

HOSTILE_TEXT = ["\x1b[31m", "\x1b]8;;http://x\x07", "\x07", "\r", "\n", "[/oops]",
                "[bold]", "\u202e", "\u2028", "format: keras-legacy-model", "..", "#",
                "&a", "*a", "{", "}", ":", "'", '"', "\\", "\x00"]

names = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="/.\x00",
                                   blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.lists(st.sampled_from([h for h in HOSTILE_TEXT if h not in ("..", "\x00")]
                             + ["w", "b", "kernel", "bias"]),
             min_size=1, max_size=4).map("".join).filter(
                 lambda s: "/" not in s and s not in (".", "")),
)

dtypes = st.sampled_from(["<f4", ">f8", "<f2", "<i8", "u1", "?", "<c8", "S5",
                          [("a", "<f4"), ("b", "<i2")]])


@st.composite
def datasets(draw):
    dt = np.dtype(draw(dtypes))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    data = np.zeros(shape, dt)
    if dt.kind in "fiu" and data.size:
        data = draw(st.sampled_from([np.ones, np.zeros]))(shape, dt)
        if dt.kind == "f" and draw(st.booleans()):
            data.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    chunks = draw(st.booleans()) and data.size > 0 and bool(shape)
    return data, chunks


attr_values = st.one_of(
    st.text(max_size=40).filter(lambda s: "\x00" not in s),
    st.sampled_from(HOSTILE_TEXT).filter(lambda s: s != "\x00"),
    st.binary(max_size=20).map(np.bytes_).filter(lambda b: b"\x00" not in bytes(b)),
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
    st.lists(st.integers(-5, 5), max_size=6).map(lambda v: np.array(v, np.int32)),
    st.just(h5py.Empty("f4")),
)


@st.composite
def h5_trees(draw):
    """A list of (path, kind, payload): groups up to depth 6, datasets, attributes,
    soft/external links, a MATLAB-like userblock."""
    ops = []
    paths = ["/"]
    for _ in range(draw(st.integers(1, 12))):
        parent = draw(st.sampled_from(paths))
        name = draw(names)
        path = (parent.rstrip("/") + "/" + name)
        kind = draw(st.sampled_from(["group", "dataset", "dataset", "attr", "soft",
                                     "external"]))
        if kind == "group" and path.count("/") < 6:
            paths.append(path)
            ops.append((path, "group", None))
        elif kind == "dataset":
            ops.append((path, "dataset", draw(datasets())))
        elif kind == "attr":
            ops.append((parent, "attr", (name, draw(attr_values))))
        elif kind == "soft":
            ops.append((path, "soft", draw(st.sampled_from(paths + ["/nowhere"]))))
        else:
            ops.append((path, "external", draw(names)))
    userblock = draw(st.one_of(st.none(), st.lists(st.sampled_from(
        ["MATLAB 7.3 MAT-file, Platform: ", "GLNXA64", "\n", "options: {follow_links: true}",
         ", Created on: ", "\x1b[2J", "x"]), max_size=6).map("".join)))
    return ops, userblock


def _write_tree(path, ops, userblock):
    kw = {"userblock_size": 512} if userblock is not None else {}
    with h5py.File(path, "w", **kw) as f:
        for p, kind, payload in ops:
            try:
                if p in f and kind != "attr":
                    continue
                if kind == "group":
                    f.require_group(p)
                elif kind == "dataset":
                    data, chunks = payload
                    f.create_dataset(p, data=data, chunks=True if chunks else None)
                elif kind == "attr":
                    if p in f or p == "/":
                        f[p].attrs[payload[0]] = payload[1]
                elif kind == "soft":
                    f[p] = h5py.SoftLink(payload)
                else:
                    f[p] = h5py.ExternalLink(payload + ".h5", "/x")
            except (ValueError, TypeError, KeyError, OSError, RuntimeError):
                pass  # h5py refused to write this combination: not a case
    if userblock is not None:
        with open(path, "r+b") as fh:
            fh.write(userblock.encode("utf-8", "replace")[:511].ljust(512, b"\x00"))


def _control_free(text: str) -> bool:
    import re

    return not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202e]", text)


@pytest.mark.slow
@SETTINGS
@given(tree=h5_trees())
def test_fuzz_hdf5_trees(tree, tmp_path_factory):
    from cli.render import tree_lines
    from wtransplant.planning.draft import draft_spec
    from wtransplant.reading.inspecting import inspect_file

    path = tmp_path_factory.mktemp("h5") / "t.h5"
    _write_tree(path, *tree)
    before = path.read_bytes()
    try:
        report = inspect_file(path, stats=True)
        lines = tree_lines(report, None, None)
        assert all(_control_free(b) for _, b, _ in lines), lines
        d = draft_spec(path)
        assert _control_free(d.text.replace("\n", " ")), d.text
        import yaml

        data = yaml.safe_load(d.text)
        assert "options" not in data
    except WTError as e:
        assert "\n" not in str(e) and _control_free(str(e)), str(e)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------
# Keras configs

CLASSES = ["Dense", "Conv2D", "Sequential", "Functional", "InputLayer", "GlorotUniform",
           "L2", "Lambda", "TFSMLayer", "StringLookup", "IntegerLookup", "TextVectorization",
           "function", "__lambda__", "__tuple__", "DTypePolicy", "Bidirectional", "GRU",
           "TorchModuleWrapper", "system", "MyLayer", "Layer"]
MODULES = [None, "keras", "keras.layers", "keras.initializers", "keras.src.models.functional",
           "keras.activations", "os", "subprocess", "builtins",
           "keras.src.layers.core.lambda_layer", "keras.src.export.tfsm_layer",
           "keras.src.utils.torch_utils", "__main__", "keras.src.saving.saving_lib"]
KEYS = ["name", "units", "activation", "kernel_initializer", "vocabulary", "function",
        "module", "registered_name", "filepath", "layer", "layers", "config", "code",
        "arguments", "idf_weights", "seed", "inbound_nodes"]
leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 1000),
                 st.sampled_from(["relu", "/etc/passwd", "Lambda", "keras.layers",
                                  "pkg>Name", "x", "softmax", "exec"]))


def _objects(children):
    return st.builds(
        lambda cls, mod, reg, cfg: {k: v for k, v in (("class_name", cls), ("module", mod),
                                                      ("registered_name", reg),
                                                      ("config", cfg)) if v != "<absent>"},
        st.sampled_from(CLASSES), st.sampled_from(MODULES + ["<absent>"]),
        st.sampled_from([None, "<absent>", "pkg>Name", "Dense", "function"]),
        st.one_of(st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
                  st.sampled_from(["relu", "Lambda", "system"])))


configs = st.recursive(leaf, lambda ch: st.one_of(
    _objects(ch), st.lists(ch, max_size=4),
    st.dictionaries(st.sampled_from(KEYS), ch, max_size=4)), max_leaves=25)


def _oracle_unsafe(c) -> str | None:
    """An independent (recursive, simple) statement of the rules."""
    if isinstance(c, list):
        return next((r for r in map(_oracle_unsafe, c) if r), None)
    if not isinstance(c, dict):
        return None
    if c.get("class_name") in ("Lambda", "TFSMLayer", "TorchModuleWrapper", "__lambda__",
                               "system", "MyLayer"):
        return f"class {c['class_name']}"
    mod = c.get("module")
    if isinstance(mod, str) and mod in ("os", "subprocess", "__main__",
                                        "keras.src.layers.core.lambda_layer",
                                        "keras.src.export.tfsm_layer",
                                        "keras.src.utils.torch_utils",
                                        "keras.src.saving.saving_lib"):
        return f"module {mod}"
    if c.get("registered_name") == "pkg>Name":
        return "registered_name"
    for k in ("function", "filepath", "code"):
        if c.get(k) not in (None, [], {}) and k in c:
            return k
    for k in ("vocabulary", "idf_weights"):
        if isinstance(c.get(k), str):
            return k
    return next((r for r in map(_oracle_unsafe, c.values()) if r), None)


@pytest.mark.slow
@SETTINGS
@given(cfg=configs)
def test_fuzz_keras_configs(cfg):
    from wtransplant.errors import InputError
    from wtransplant.safety.configs import check_config

    bad = _oracle_unsafe(cfg)
    try:
        check_config(cfg, "fuzz")
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert bad is None, (bad, cfg)


# --------------------------------------------------------------------------------------
# specs

spec_values = st.recursive(
    st.one_of(st.none(), st.integers(-5, 5), st.sampled_from(["Dense", "/etc/shadow", "relu"]),
              st.text(max_size=8)),
    lambda ch: st.one_of(st.lists(ch, max_size=4),
                         st.dictionaries(st.sampled_from(
                             ["class", "name", "units", "vocabulary", "module", "class_name",
                              "config", "layers", "input_shape", "from", "transpose"]),
                             ch, max_size=4)), max_leaves=20)


@st.composite
def spec_texts(draw):
    import yaml

    layers = draw(st.lists(spec_values, max_size=4))
    doc = {"version": draw(st.sampled_from([1, 2, "1"])),
           "source": draw(st.sampled_from(["w.h5", "/etc/passwd", "../x.h5"])),
           "model": draw(st.one_of(st.just({"input_shape": [4], "layers": layers}),
                                   spec_values))}
    if draw(st.booleans()):
        doc["weights"] = draw(spec_values)
    text = yaml.safe_dump(doc, sort_keys=False)
    extra = draw(st.sampled_from(
        ["", "a: &a [x, x]\nb: &b [*a, *a, *a]\n", "r: &r [*r]\n", "x: !!python/name:os.system\n",
         "d: " + "[" * draw(st.integers(1, 400)) + "]" * 3 + "\n", "k: 1\nk: 2\n",
         "\ufeffz: 1\n", "options: {follow_links: true}\n"]))
    return text + extra


@pytest.mark.slow
@SETTINGS
@given(text=spec_texts())
def test_fuzz_specs(text, tmp_path_factory):
    from wtransplant.planning.spec import load_spec

    p = tmp_path_factory.mktemp("spec") / "s.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_spec(p)
    except WTError as e:
        assert "\n" not in str(e) and _control_free(str(e))


# --------------------------------------------------------------------------------------
# zip layouts

_W = io.BytesIO()
with h5py.File(_W, "w") as _f:
    _f["layers/dense/vars/0"] = np.ones((4, 3), np.float32)
WEIGHTS = _W.getvalue()


@st.composite
def zip_layouts(draw):
    members = {}
    names_ = draw(st.lists(st.sampled_from(
        ["config.json", "metadata.json", "model.weights.h5", "../evil.txt", "/abs.txt",
         "assets/vocab.txt", "a\\..\\..\\b", "C:x", "model.weights.h5"]), max_size=6))
    for n in names_:
        if n == "config.json":
            body = draw(st.one_of(
                configs.map(json.dumps),
                st.just('{"class_name": "Sequential", "config": {"layers": '
                        + "[" * draw(st.integers(50, 3000)) + "]" * 3 + "}}"),
                st.binary(max_size=30).map(lambda b: b.decode("latin-1"))))
            members[n] = body.encode("utf-8", "surrogatepass")
        elif n == "model.weights.h5":
            members[n] = draw(st.sampled_from([WEIGHTS, WEIGHTS[:100], b"junk"]))
        else:
            members[n] = draw(st.binary(max_size=20))
    prefix = draw(st.sampled_from([b"", b"\x89HDF\r\n\x1a\n" + bytes(504), b"MZ"]))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for n, b in members.items():
            z.writestr(n, b)
    return prefix + buf.getvalue()


@pytest.mark.slow
@SETTINGS
@given(data=zip_layouts())
def test_fuzz_zip_layouts(data, tmp_path_factory):
    from wtransplant.reading.inspecting import inspect_file
    from wtransplant.runtimes.keras import keras_archive_config
    from wtransplant.safety.configs import check_config

    d = tmp_path_factory.mktemp("zip")
    p = d / "m.keras"
    p.write_bytes(data)
    for call in (lambda: inspect_file(p, stats=True),
                 lambda: check_config(keras_archive_config(p), str(p))):
        try:
            call()
        except WTError as e:
            assert "\n" not in str(e)
    assert sorted(x.name for x in d.iterdir()) == ["m.keras"]  # nothing extracted
    assert p.read_bytes() == data
