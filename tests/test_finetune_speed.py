"""Streamed fine-tuning keeps the training loop responsive: while the loader thread runs
Python beside it, the interpreter hands the GIL over within 0.1 ms (not the default 5 ms,
as long as a small model's whole step), and the setting is restored afterwards."""

from __future__ import annotations

import sys

import numpy as np
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
    assert seen and max(seen) <= train.LOADER_SWITCH_INTERVAL * 1.001
    assert sys.getswitchinterval() == before


def test_switch_interval_restored_when_training_fails():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), train.quick_gil_handover():
        assert sys.getswitchinterval() == pytest.approx(train.LOADER_SWITCH_INTERVAL)
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("chunk", [None, 3])
def test_tf_data_stream_hands_over_the_readers_batches_in_order(chunk):
    """The chunked hand-over to tf.data (batches written into each chunk's array) gives
    exactly ``BatchReader.batch(epoch, i)`` in order, with a short last batch and batches
    shortened by skipped NaN samples, which start a new chunk."""
    from wtransplant.finetuning import data as fdata
    from wtransplant.finetuning import tfextras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tf.data pipeline is TensorFlow's")
    x = np.arange(2 * 103, dtype=np.float32).reshape(103, 2)
    x[50, 0] = np.nan
    ds = fdata.Dataset(fdata.MemoryArray(x, "x"), fdata.MemoryArray(np.arange(103), "y"))
    rd = fdata.BatchReader(ds, 8, shuffle=True, seed=4, y_dtype="int32",
                           guard=fdata.NonFiniteGuard(skip=True))
    epoch = [2]
    got = list(tfextras.stream_dataset([rd], lambda: epoch[0], chunk=chunk))
    want = [rd.batch(2, i) for i in range(len(rd))]
    assert sum(len(b[1]) for b in want) == 102  # one NaN sample skipped
    assert len({len(b[1]) for b in want}) > 1  # batches of several sizes
    assert len(got) == len(want) == 13
    for (gx, gy), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(gx.numpy(), wx)
        np.testing.assert_array_equal(gy.numpy(), wy)
    epoch[0] = 3  # the next pass reads the epoch again: another order
    again = [b[1].numpy() for b in tfextras.stream_dataset([rd], lambda: epoch[0])]
    assert not all(np.array_equal(a, w[1]) for a, w in zip(again, want))


def test_chunk_size_is_bounded_in_bytes_and_whole_steps():
    from wtransplant.finetuning import tfextras

    assert tfextras.chunk_batches(np.zeros((64, 8, 8, 1), np.float32), 1) == 64
    assert tfextras.chunk_batches(np.zeros((512, 64, 64, 3), np.float32), 1) == 1
    big = tfextras.chunk_batches(np.zeros((32, 32, 32, 3), np.float32), 2)
    assert big % 2 == 0 and big * 32 * 32 * 32 * 3 * 4 <= 2 * tfextras.CHUNK_BYTES
