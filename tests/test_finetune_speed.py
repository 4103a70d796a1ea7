"""Streamed fine-tuning keeps the training loop responsive: while the loader thread runs
Python beside it, the interpreter hands the GIL over within 0.5 ms (not the default 5 ms,
as long as a small model's whole step), and the setting is restored afterwards."""

from __future__ import annotations

import sys

import pytest
from conftest import fx

keras = pytest.importorskip("keras")

from wtransplant.finetuning import train  # noqa: E402


def test_switch_interval_lowered_during_fit_and_restored():
    import wtransplant

    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(sys.getswitchinterval())

    before = sys.getswitchinterval()
    assert before > train.LOADER_SWITCH_INTERVAL  # Python's default, 5 ms
    wtransplant.finetune(str(fx("keras2/k2_digits_model.h5")), str(fx("data/digits.h5")),
                         new_head=10, trainable_from="features", epochs=1, batch_size=256,
                         checkpoints=False, plot=False, progress=False, seed=1,
                         callbacks=[Probe()])
    assert seen and max(seen) <= train.LOADER_SWITCH_INTERVAL
    assert sys.getswitchinterval() == before


def test_switch_interval_restored_when_training_fails():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), train.quick_gil_handover():
        assert sys.getswitchinterval() == train.LOADER_SWITCH_INTERVAL
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == before
