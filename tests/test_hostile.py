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
    from wtransplant.artifacts import load_artifact
    from wtransplant.finetuning.train import load_model

    path = fx(rel)
    before = sha256(path)
    for load in (load_artifact, load_model):
        with pytest.raises(InputError) as ei:
            load(path)
        assert CONFIG_FILES[rel] in str(ei.value), str(ei.value)
        assert "root:" not in str(ei.value)  # no line of the named file is ever quoted
    if rel.endswith(".h5"):
        from wtransplant.transplant import rebuild_file

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
    from wtransplant.transplant import rebuild

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

    from wtransplant.transplant import rebuild_file

    seen = []
    real = keras.legacy.saving.deserialize_keras_object

    def spy(*a, **kw):
        seen.append(serialization_lib.in_safe_mode())
        return real(*a, **kw)

    monkeypatch.setattr(keras.legacy.saving, "deserialize_keras_object", spy)
    rebuild_file(fx("keras2/k2_rnn_model.h5"), output=None, progress=False)
    assert seen and all(seen), seen
