"""Layer 3 (TensorFlow only, imported when the backend is TensorFlow or ``--strategy``
asks for it): what ``wtransplant finetune`` does with TensorFlow that the public Keras API
does not.

* The input pipeline under TensorFlow (:func:`stream_dataset`): the reader's batches
  through ``tf.data``, handed over from Python a chunk at a time.
* ``--strategy mirrored``: :class:`tf.distribute.MirroredStrategy` over every GPU, or over
  the logical CPU devices when there is no GPU (``split_cpu(n)`` splits one CPU into
  ``n``, which is how the distributed path is tested on a CPU-only machine). Trainable
  BatchNormalization layers are rebuilt with ``synchronized=True`` (otherwise their moving
  statistics diverge between replicas); frozen ones run in inference mode and need nothing.
* ``--strategy multiworker``: :class:`tf.distribute.MultiWorkerMirroredStrategy` from
  ``TF_CONFIG``. Keras 3's ``fit`` fails under it (keras-team/keras #20585, #20329) in two
  private functions of its TensorFlow trainer; :func:`multiworker_patches` replaces them
  for the duration of the run (see the function for what each patch changes). The input
  pipeline is sharded by worker here (each worker reads only its share of every batch)
  and handed to Keras as a distributed dataset.

Only this package's own modules are imported at import time; TensorFlow is imported inside
the functions.
"""

from __future__ import annotations

import contextlib
import json
import os

from wtransplant.errors import InputError
from wtransplant.quiet_tf import install as _quiet_tf

_quiet_tf()  # before TensorFlow is imported: no TensorFlow log lines on stderr

_STRATEGIES: dict = {}


def _tf():
    import keras

    if keras.backend.backend() != "tensorflow":
        b = keras.backend.backend()
        raise InputError(f"strategy needs the TensorFlow backend (KERAS_BACKEND={b}): run "
                         f"with KERAS_BACKEND=tensorflow"
                         + ("; under JAX, keras.distribution does this" if b == "jax" else ""))
    import tensorflow as tf

    return tf


def split_cpu(n: int) -> None:
    """Split the first CPU into ``n`` logical devices. Must run before TensorFlow starts
    its devices (the CLI does it before importing Keras)."""
    import tensorflow as tf

    if n < 1:
        raise InputError(f"cpu_devices must be at least 1, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise InputError(f"cannot split the CPU into {n} logical devices now: TensorFlow "
                             f"has started its devices ({e})") from None


def get_strategy(name: str | None):
    """The strategy for ``name`` (None, 'mirrored', 'multiworker'), created once per
    process; a ``tf.distribute.Strategy`` object is returned as is."""
    if name is None or name in ("none", "default"):
        return None
    if not isinstance(name, str):
        return name
    if name in _STRATEGIES:
        return _STRATEGIES[name]
    tf = _tf()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
            [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multiworker":
        cfg = os.environ.get("TF_CONFIG")
        if not cfg:
            raise InputError("strategy multiworker needs TF_CONFIG (the cluster and this "
                             "worker's index); see docs/finetune.md")
        try:
            json.loads(cfg)
        except ValueError as e:
            raise InputError(f"TF_CONFIG is not valid JSON: {e}") from None
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as e:
            raise InputError(f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG: "
                             f"{' '.join(str(e).split())[:300]}") from None
    else:
        raise InputError(f"strategy {name!r}: use mirrored or multiworker")
    _STRATEGIES[name] = strategy
    return strategy


def describe(strategy) -> dict:
    if strategy is None:
        return {"name": None, "replicas": 1, "workers": 1}
    w, nw = worker(strategy)
    return {"name": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync),
            "workers": nw, "worker": w,
            "devices": list(getattr(strategy.extended, "worker_devices", []))}


def is_multiworker(strategy) -> bool:
    if strategy is None:
        return False
    tf = _tf()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def worker(strategy) -> tuple[int, int]:
    """(this worker's index, number of workers)."""
    if not is_multiworker(strategy):
        return 0, 1
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    n = sum(len(v) for k, v in spec.items() if k in ("worker", "chief"))
    idx = int(resolver.task_id or 0)
    if resolver.task_type == "worker" and "chief" in spec:
        idx += len(spec["chief"])
    return idx, n


def is_chief(strategy) -> bool:
    return worker(strategy)[0] == 0


@contextlib.contextmanager
def multiworker_patches(strategy):
    """Two replacements in Keras' TensorFlow trainer while a multi-worker run lasts:

    1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first (per-replica) data
       batch with ``strategy.reduce('MEAN', ...)`` to build the model symbolically; under
       MultiWorkerMirroredStrategy that is a collective over the batch itself and fails
       ("Attempt to convert a value (PerReplica...)"). The patch builds from this replica's
       local batch instead (only its shape matters).
    2. ``reduce_per_replica`` reduces scalar losses and metrics with
       ``strategy.reduce('MEAN', v, axis=0)``, which fails on scalars ("Invalid reduction
       dimension 0 for input with 0 dimensions"). The patch reduces with ``axis=None``.
    Nothing changes for any other strategy, and both are restored afterwards.
    """
    if not is_multiworker(strategy):
        yield
        return
    tf = _tf()
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tft

    orig_reduce = tft.reduce_per_replica
    orig_build = tft.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strat, reduction):
        if reduction in ("auto", "mean") and tft._collective_all_reduce_multi_worker(strat):
            def _r(v):
                if tft._is_per_replica_instance(v) or isinstance(v, tf.Tensor):
                    return strat.reduce("MEAN", v, axis=None)
                return v

            return tree.map_structure(_r, values)
        return orig_reduce(values, strat, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strat = self._distribute_strategy
        if strat is None or iterator is None or \
                not tft._collective_all_reduce_multi_worker(strat):
            return orig_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda v: strat.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
            break
        with strat.scope():
            self._symbolic_build(data_batch=data_batch)

    tft.reduce_per_replica = reduce_per_replica
    tft.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    try:
        yield
    finally:
        tft.reduce_per_replica = orig_reduce
        tft.TensorFlowTrainer._maybe_symbolic_build = orig_build


#: bytes of inputs per hand-over from the Python generator to tf.data (see stream_dataset)
CHUNK_BYTES = 1 << 20
#: at most this many batches per hand-over
MAX_CHUNK = 64


def chunk_batches(x0, readers: int) -> int:
    """Batches per hand-over: about CHUNK_BYTES of inputs, a whole number of steps, at
    least one step, at most MAX_CHUNK batches (bounded whatever the data set's size)."""
    per_step = max(1, x0.nbytes) * readers
    steps = max(1, min(MAX_CHUNK // readers, CHUNK_BYTES // per_step))
    return steps * readers


def stream_dataset(readers, get_epoch, *, chunk: int | None = None):
    """A tf.data pipeline of the readers' batches: for each step, one batch from each
    reader in turn (several readers: the pieces of one global batch, one per local
    replica). ``get_epoch()`` is read when an epoch's pass starts (it sets the shuffle).

    The Python generator hands over ``chunk`` batches at a time (default: about
    ``CHUNK_BYTES`` of inputs, :func:`chunk_batches`) and tf.data splits them again
    (``unbatch``) in C++: the per-batch cost of crossing from Python into TensorFlow is
    paid once per chunk. With one reader a chunk is a run of batches of one size made by
    ``BatchReader.stack`` (read slice by slice into one array, then checked, shuffled and
    preprocessed in one pass each); where that does not apply (augmentation, a skipped
    non-finite sample, several readers) each batch is written into the chunk's array.
    The batches and their order are those of ``BatchReader.batch(epoch, i)``, exactly as
    through a ``keras.utils.PyDataset``.
    """
    tf = _tf()
    steps = len(readers[0])
    x0, y0 = readers[0].batch(0, 0)
    chunk = chunk or chunk_batches(x0, len(readers))

    one = readers[0] if len(readers) == 1 else None

    def per_batch(epoch, start, stop):
        buf = Chunk(chunk)
        for i in range(start, stop):
            for rd in readers:
                xb, yb = rd.batch(epoch, i)
                if not buf.fits(xb, yb):
                    yield buf.arrays()
                    buf = Chunk(chunk)
                buf.add(xb, yb)
        if buf.k:
            yield buf.arrays()

    def gen():
        epoch = get_epoch()
        if one is None:
            yield from per_batch(epoch, 0, steps)
            return
        i = 0
        while i < steps:  # runs of up to `chunk` batches of one planned size
            m, j = one.size(epoch, i), i + 1
            while j < min(steps, i + chunk) and one.size(epoch, j) == m:
                j += 1
            got = one.stack(epoch, i, j)
            if got is None:
                yield from per_batch(epoch, i, j)
            else:
                yield got
            i = j

    sig = (tf.TensorSpec((None, None, *x0.shape[1:]), tf.as_dtype(x0.dtype)),
           tf.TensorSpec((None, None, *y0.shape[1:]), tf.as_dtype(y0.dtype)))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).unbatch()
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps * len(readers)))
    return ds.prefetch(tf.data.AUTOTUNE)


class Chunk:
    """Up to ``size`` batches of one shape, stacked as they come. Its arrays are new for
    every chunk: TensorFlow may keep a handed-over array's memory without copying it."""

    def __init__(self, size: int):
        self.size, self.k = size, 0
        self.x = self.y = None

    def fits(self, xb, yb) -> bool:
        return self.x is None or (self.k < self.size and xb.shape == self.x.shape[1:]
                                  and yb.shape == self.y.shape[1:])

    def add(self, xb, yb) -> None:
        import numpy as np

        if self.x is None:
            self.x = np.empty((self.size, *xb.shape), xb.dtype)
            self.y = np.empty((self.size, *yb.shape), yb.dtype)
        self.x[self.k], self.y[self.k] = xb, yb
        self.k += 1

    def arrays(self):
        return self.x[:self.k], self.y[:self.k]


def multiworker_dataset(strategy, make_reader, get_epoch):
    """A distributed dataset for multi-worker training. Every global batch is cut into one
    contiguous piece per replica; worker ``w`` reads only the pieces of its own replicas
    (``make_reader((piece, pieces))`` gives the
    :class:`~wtransplant.finetuning.data.BatchReader` of one piece). Returns the dataset
    and the number of steps per epoch."""
    tf = _tf()
    w, nw = worker(strategy)
    local = max(1, strategy.num_replicas_in_sync // nw)
    readers = [make_reader((w * local + r, nw * local)) for r in range(local)]

    def dataset_fn(ctx):
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.OFF  # sharded by the readers already
        return stream_dataset(readers, get_epoch).with_options(opts)

    return strategy.distribute_datasets_from_function(dataset_fn), len(readers[0])
