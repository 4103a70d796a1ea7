"""Layer 2 (public Keras API, any backend): fine-tune a model on new data.

    >>> model, history = wtransplant.finetune("digits5.keras", "digits.h5", new_head=10,
    ...                                       trainable_from="features", epochs=6,
    ...                                       output="digits10.keras")
    >>> history.report["evaluation"]["after"]["accuracy"]

The recipe: replace the output layer if asked (``new_head``), freeze everything but the
head and train it (phase 1, ``head_epochs``), then unfreeze from ``trainable_from`` (and
the layers matching ``trainable``) and go on at ``lr * lr_scale`` (phase 2). Layers are
frozen one by one (``layer.trainable = False``; never ``model.trainable = False`` and
unfreezing, which leaves nothing trainable in Keras 3), BatchNormalization layers stay
frozen, hence in inference mode, unless ``train_bn`` (``base(x, training=False)`` is
ignored by ``fit`` in Keras 3), and the model is compiled again after every change of
trainable flags.

Batches come from :class:`~.data.BatchReader`, a pure function of (seed, epoch, index);
under JAX and torch they reach Keras through a :class:`keras.utils.PyDataset`, so the same
loop runs under KERAS_BACKEND=tensorflow, jax or torch. Under TensorFlow the same batches
go through ``tf.data`` (:mod:`.tfextras`, cheaper per batch); ``strategy`` and TensorBoard
need TensorFlow and import it when asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from wtransplant.errors import InputError, TrainingError
from wtransplant.finetuning import records
from wtransplant.finetuning.data import (
    BatchReader,
    DataBundle,
    LabelInfo,
    NonFiniteGuard,
    Preprocess,
    fit_standardize,
    label_info,
    load_data,
)
from wtransplant.finetuning.options import FinetuneOptions, make_options
from wtransplant.reading.h5io import check_readable_file
from wtransplant.runtimes.keras import walk_layers

#: test hook: exit abruptly (as a killed process would) after this many epochs are
#: checkpointed
CRASH_ENV = "WTRANSPLANT_FINETUNE_CRASH_AFTER"
EXIT_CRASH = 75


@dataclass
class FinetuneHistory:
    """What :func:`finetune` returns next to the model: ``history`` (metric -> values per
    epoch, like ``keras.callbacks.History.history``), ``epochs`` (one row per epoch) and the
    whole ``report`` (evaluation before/after, frozen layers, timings, outputs)."""

    history: dict[str, list]
    epochs: list[dict]
    report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.report


def finetune(model, data, *, output: str | os.PathLike | None = None,
             provenance: str | os.PathLike | None = None,
             **options) -> tuple[keras.Model, FinetuneHistory]:
    """Fine-tune ``model`` (a ``keras.Model``, a ``.keras`` file or a Keras 2 full-model
    ``.h5``) on ``data`` (an HDF5/``.npz``/CSV file, an image folder, or ``(x, y)``
    arrays) and, if ``output`` is given, save it there (``.keras`` or ``.h5``) with the
    history, curves and report next to it.

    Args:
        model: a ``keras.Model``, a ``.keras`` archive or a Keras 2 full-model ``.h5``.
        data: training data: an HDF5 (streamed), ``.npz`` or CSV file, an image folder,
            or ``(x, y)`` arrays.
        output: where to save the fine-tuned model; None: nothing is written.
        provenance: a rebuild or finetune report (JSON) naming where the input model's
            weights come from; default: what the model file carries (its
            ``.wtransplant.json`` sidecar, written by rebuild and finetune). It goes into
            the report (``provenance``), history.json and the sidecar of ``output``, so an
            export of the fine-tuned model still names the original weights' sha256.
        **options: the ``finetune`` command's options with underscores, e.g.
            ``epochs=4, batch_size=32, lr=3e-3, new_head=10, trainable_from="features",
            seed=1, quiet=True, no_plot=True`` (all in
            :class:`~wtransplant.finetuning.options.FinetuneOptions`; ``val_data`` also
            takes ``(x, y)``).

    Returns:
        ``(model, history)``: the fine-tuned ``keras.Model`` and a :class:`FinetuneHistory`
        (``history`` per metric and epoch, the whole ``report``).

    Raises:
        TypeError: an unknown keyword (a misspelt option).
        InputError: bad input or option value; messages name keyword arguments (exit 2).
        TrainingError: the loss became NaN/Inf; nothing is saved (exit 1).
    """
    opts = make_options(**options)
    from wtransplant.safety.paths import check_output

    check_output(output, [x for x in (model, data, opts.val_data)
                          if isinstance(x, str | os.PathLike)])
    run = _Run(model, data, output, opts)
    run.provenance_arg = provenance
    try:
        return run.execute()
    finally:
        run.close()


# --------------------------------------------------------------------------------------
# the model


def load_model(model) -> tuple[keras.Model, dict]:
    """A Keras model from an object, a ``.keras`` archive (safe mode, config checked for
    code first) or a Keras 2 full-model HDF5 file (through ``rebuild_file``)."""
    if isinstance(model, keras.Model):
        return model, {"source": "keras.Model object", "name": model.name}
    p = check_readable_file(model)
    if p.suffix.lower() == ".keras":
        from wtransplant.runtimes.keras import load_keras_archive

        m = load_keras_archive(p)
        return m, {"source": str(p), "format": "keras3-archive", "name": m.name,
                   **_carried(p)}
    if p.suffix.lower() in (".h5", ".hdf5"):
        from wtransplant.building.transplanting import rebuild_file

        m, rep = rebuild_file(p, progress=False)
        info = {"source": str(p), "format": rep.source.get("format"), "name": m.name,
                "rebuilt": True, **_carried(p)}
        if info.get("provenance") is None:  # the file itself holds the original weights
            info["provenance"] = {"source": rep.source, "spec": rep.spec,
                                  "rebuild_report": None, "finetune": []}
        return m, info
    raise InputError(f"{p}: MODEL must be a .keras archive or a Keras 2 full-model .h5 (for "
                     f"other files run `wtransplant rebuild` first)")


def _carried(p: Path) -> dict:
    """The model file's sha256 and the provenance it carries (its sidecar), if any."""
    from wtransplant.provenance import file_sha256, read_sidecar

    side = read_sidecar(p)
    prov = None
    if side is not None:
        prov = {"source": side["source"], "spec": side.get("spec"),
                "rebuild_report": side.get("rebuild_report"),
                "finetune": list(side.get("finetune") or []),
                "from": f"{p.name}.wtransplant.json"}
    return {"input_file": {"path": str(p), "sha256": file_sha256(p)}, "provenance": prov}


def compute_layers(model) -> list:
    """The model's leaf layers (nested models flattened), input layers left out: what
    ``--trainable-from`` indexes."""
    return [lay for lay in walk_layers(model) if not isinstance(lay, keras.layers.InputLayer)]


def _output_activation(model) -> str:
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    act = (last.get_config() or {}).get("activation")
    return act if isinstance(act, str) else "linear"


def replace_head(model, units: int, activation: str) -> tuple[keras.Model, keras.layers.Layer,
                                                               list[str]]:
    """A new model whose last layer with weights (and any parameter-free layers after it,
    such as a softmax Activation) is replaced by ``Dense(units, activation)`` in float32.
    Returns (model, head layer, names of the replaced layers)."""
    if len(model.outputs) != 1:
        raise InputError(f"new_head: model {model.name!r} has {len(model.outputs)} outputs; "
                         f"only single-output models are supported")
    top = [lay for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)]
    k = max((i for i, lay in enumerate(top) if lay.weights), default=None)
    if k is None:
        raise InputError(f"new_head: model {model.name!r} has no layer with weights")
    if isinstance(top[k], keras.Model):
        raise InputError(f"new_head: the last layer with weights, {top[k].name!r}, is a "
                         f"nested model; replace its head by hand")
    replaced = [lay.name for lay in top[k:]]
    names = {lay.name for lay in walk_layers(model)}
    name = next(n for n in ("new_head", *(f"new_head_{i}" for i in range(1, 99)))
                if n not in names)
    head = keras.layers.Dense(units, activation=activation, name=name, dtype="float32")
    out = head(top[k].input)
    return keras.Model(model.inputs, out, name=f"{model.name}_head{units}"), head, replaced


def materialize(model, policy: str, strategy, sync_bn: bool, keep_float32: str):
    """The same model rebuilt from its config under ``policy`` (layer ``keep_float32``, the
    output layer, stays float32) and inside ``strategy.scope()``, with the same weights.
    Returned as is when neither is asked for."""
    if policy == "float32" and strategy is None:
        return model
    cfg = model.get_config()

    def rewrite(c):
        if isinstance(c, dict):
            conf = c.get("config")
            if isinstance(conf, dict) and "class_name" in c:
                cls = c["class_name"]
                if "dtype" in conf and cls != "InputLayer" and conf.get("name") != keep_float32:
                    conf["dtype"] = policy
                if cls == "BatchNormalization" and sync_bn:
                    conf["synchronized"] = True
            for v in c.values():
                rewrite(v)
        elif isinstance(c, list):
            for v in c:
                rewrite(v)

    rewrite(cfg.get("layers"))
    cfg["dtype"] = policy
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        new = type(model).from_config(cfg)
        new.set_weights(model.get_weights())
    return new


def resolve_precision(precision: str) -> tuple[str, str]:
    """(dtype policy, why). Mixed precision asked for on a machine without a capable GPU is
    first tried on a small convolution: oneDNN builds float16/bfloat16 convolutions only for
    some instruction sets (none on an AVX2-only CPU), and then the run is float32 and says
    so instead of failing at its first batch."""
    if precision in ("mixed", "mixed_bfloat16"):
        policy = "mixed_float16" if precision == "mixed" else precision
        if not capable_gpu():
            dtype = policy.split("_", 1)[1]
            bad = low_precision_fails(dtype)
            if bad:
                return "float32", (f"precision {precision} asked for, but this machine's "
                                   f"kernels cannot run {dtype} convolutions ({bad}): "
                                   f"trained in float32")
        return policy, f"--precision {precision}"
    if precision == "float32":
        return precision, f"--precision {precision}"
    gpu = capable_gpu()
    if gpu:
        return "mixed_float16", f"automatic: {gpu}"
    return "float32", "automatic: no GPU with compute capability >= 7.0"


def low_precision_fails(dtype: str) -> str | None:
    """None when this backend runs a small ``dtype`` convolution and dense layer, else the
    reason it does not (in a few words)."""
    try:
        y = keras.layers.Conv2D(2, 3, dtype=dtype)(np.ones((1, 8, 8, 2), "float32"))
        keras.ops.convert_to_numpy(keras.layers.Dense(2, dtype=dtype)(y))
        return None
    except Exception as e:  # the kernels' own words: one line, short
        text = " ".join(str(e).split())
        m = re.search(r"could not create a primitive[^.,]*", text)
        return m.group(0) if m else f"{type(e).__name__}: {text[:120]}"


def capable_gpu() -> str | None:
    """A description of a GPU fast at float16 (compute capability >= 7.0), or None."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            for g in tf.config.list_physical_devices("GPU"):
                cc = tf.config.experimental.get_device_details(g).get("compute_capability")
                if cc and tuple(cc) >= (7, 0):
                    return f"{g.name} (compute capability {cc[0]}.{cc[1]})"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (7, 0):
                return torch.cuda.get_device_name()
        elif backend == "jax":
            import jax

            for d in jax.devices():
                cc = getattr(d, "compute_capability", None)
                if d.platform == "gpu" and cc and float(cc) >= 7.0:
                    return f"{d.device_kind} (compute capability {cc})"
    except Exception:
        return None
    return None


def devices() -> list[str]:
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_logical_devices()]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices()]
        if backend == "torch":
            import torch

            return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    except Exception:
        pass
    return ["cpu"]


# --------------------------------------------------------------------------------------
# data


class Feed(keras.utils.PyDataset):
    """Batches of a :class:`BatchReader` for Keras; ``epoch`` is set by the run before
    each epoch starts (the batch order is a function of seed, epoch and index only)."""

    def __init__(self, reader: BatchReader, *, workers: int = 1,
                 use_multiprocessing: bool = False):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=8)
        self.reader = reader
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int):
        return self.reader.batch(self.epoch, index)


# --------------------------------------------------------------------------------------
# the run


@dataclass
class Phase:
    name: str
    start: int
    end: int
    trainable: list[str]
    lr: float


class _Run:
    def __init__(self, model, data, output, opts: FinetuneOptions):
        self.model_arg, self.data_arg, self.opts = model, data, opts
        self.output = Path(output) if output is not None else None
        if self.output is not None and self.output.suffix.lower() not in (".keras", ".h5",
                                                                          ".hdf5"):
            raise InputError(f"output {self.output}: use a .keras (Keras 3 archive) or .h5 "
                             f"file name")
        self.run_dir = Path(opts.run_dir) if opts.run_dir else (
            self.output.with_name(self.output.stem + ".finetune") if self.output else None)
        self.ckpt_dir = self.run_dir / "checkpoints" if (self.run_dir and opts.checkpoints) \
            else None
        self.bundle: DataBundle | None = None
        self.notes: list[str] = []
        self.rows: list[dict] = []
        self.epoch = 0  # the epoch being trained (sets the feeds' shuffle)
        self.t0 = time.perf_counter()

    def close(self) -> None:
        if self.bundle is not None:
            self.bundle.close()

    # ----------------------------------------------------------------------------------
    def execute(self):
        o = self.opts
        state = arrays = None
        if o.resume:
            if self.ckpt_dir is None:
                raise InputError("resume needs the run folder of the interrupted run "
                                 "(give the same output, or run_dir)")
            state, arrays = records.load_checkpoint(self.ckpt_dir)
        self.seed = int(state["seed"]) if state else (
            o.seed if o.seed is not None else int(np.random.SeedSequence().entropy % 2**31))
        self.deterministic = (state or {}).get("deterministic", o.seed is not None)
        self._seed_everything()

        from wtransplant.finetuning.tfextras import get_strategy

        self.strategy = get_strategy(o.strategy) if o.strategy not in (None, "none") else None
        original, self.model_info = load_model(self.model_arg)
        self.provenance = self._input_provenance()
        self._open_data(original)
        self.labels = label_info(self.bundle.train.y, skip_nonfinite=o.skip_nonfinite)
        model = self._shape_model(original)
        self.policy, self.policy_why = resolve_precision(o.precision)
        if self.policy == "float32" and o.precision.startswith("mixed"):
            self.notes.append(self.policy_why)
        elif self.policy == "mixed_float16" and not capable_gpu():
            self.notes.append("mixed_float16 on a CPU is slow: it is meant for GPUs")
        head_name = model.layers[-1].name
        self.model = materialize(model, self.policy, self.strategy,
                                 sync_bn=o.train_bn and self.strategy is not None,
                                 keep_float32=head_name)
        self.phases = self._phases()
        self._check_resume(state)
        self._make_feeds()
        frozen_before = self._frozen_digest()
        self._progress(f"fine-tuning on {keras.backend.backend()} ({', '.join(devices())}), "
                       f"{len(self.bundle.train)} samples, seed {self.seed}")
        self.evaluation = {}
        if state is None:
            self._compile(self.phases[0])
            self.evaluation["before"] = self._evaluate()
            if self.original_accuracy is not None:
                self.evaluation["before_original_model"] = {"accuracy": self.original_accuracy}
        else:
            self.evaluation = dict(state.get("evaluation") or {})
            self.rows = list(state["rows"])
        self.status = "ok"
        self.resumed_from = state["resume_epoch"] if state else None
        self._best = (state or {}).get("best") or {"value": None, "epoch": None}
        early = (state or {}).get("early") or {}
        q, e = (state["resume_phase"], state["resume_epoch"]) if state else (0, 0)
        for p_index, phase in enumerate(self.phases):
            first = e if p_index == q else phase.start
            if p_index < q or first >= phase.end:
                continue
            self._compile(phase)
            if arrays is not None:  # resuming: the optimizer too if it is this phase's
                self._restore(arrays, optimizer=state["phase"] == p_index)
                arrays = None
            stopped = self._fit(phase, p_index, first, early if p_index == q else {})
            if self.status != "ok":
                break
            if stopped:
                self.notes.append(f"phase {phase.name!r}: early stopping after epoch "
                                  f"{self.rows[-1]['epoch'] + 1}")
        if arrays is not None:  # resumed after the last epoch: the weights are the result
            self._compile(self.phases[-1])
            self._restore(arrays, optimizer=False)
        if self.status == "diverged":
            self._write_records()
            raise TrainingError(self.failure)
        if o.restore_best and self._best.get("epoch") is not None:
            self._restore_best()
        self.evaluation["after"] = self._evaluate()
        self.frozen_unchanged = self._frozen_digest() == frozen_before
        out = self._save()
        self._write_records(output=out)
        if self.ckpt_dir is not None and not o.keep_checkpoints and self._chief():
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        hist = FinetuneHistory(records.history_dict(self.rows), self.rows, self.report)
        return self.model, hist

    # ----------------------------------------------------------------------------------
    def _seed_everything(self):
        keras.utils.set_random_seed(self.seed)
        if self.deterministic and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()

    def _open_data(self, model):
        o = self.opts
        shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
        if shape is None:
            raise InputError(f"model {model.name!r} has {len(model.inputs)} inputs; fine-tuning "
                             f"supports single-input models")
        image = (shape[0], shape[1]) if len(shape) == 3 and None not in shape[:2] else None
        self.guard = NonFiniteGuard(skip=o.skip_nonfinite)
        self.bundle = load_data(self.data_arg, x=o.x, y=o.y, val_data=o.val_data,
                                val_x=o.val_x, val_y=o.val_y, val_split=o.val_split,
                                image_size=image, channels=shape[-1] if image else None)
        self.notes += self.bundle.notes
        got = self.bundle.train.x.sample_shape
        pre = Preprocess(rescale=o.rescale, flip=o.flip, rotation=o.rotation)
        if pre.rescale is None and self.bundle.kind == "images":
            pre.rescale = 1.0 / 255
        in_dtype = str(model.inputs[0].dtype)
        if "int" in in_dtype:  # token ids and the like: passed as they are
            if o.rescale is not None or o.standardize or pre.augments:
                raise InputError(f"model {model.name!r} takes {in_dtype} inputs: rescale, "
                                 f"standardize, flip and rotation do not apply")
            pre.dtype = in_dtype
        if None not in shape and got != shape:
            if math.prod(got) == math.prod(shape):
                pre.reshape = shape
                self.notes.append(f"samples of shape {got} are reshaped to the model's input "
                                  f"{shape}")
            else:
                raise InputError(f"{self.bundle.train.x.display}: samples of shape {got} do not "
                                 f"fit the input (None, {', '.join(map(str, shape))}) of model "
                                 f"{model.name!r}")
        elif len(got) != len(shape) or any(s not in (None, g) for s, g in zip(shape, got)):
            raise InputError(f"{self.bundle.train.x.display}: samples of shape {got} do not fit "
                             f"the input {tuple(shape)} of model {model.name!r}")
        if pre.augments and len(pre.reshape or got) != 3:
            raise InputError(f"flip/rotation augment images (h, w, c); samples of "
                             f"{self.bundle.train.x.display} have shape {got}")
        if o.standardize:
            pre.mean, pre.std = fit_standardize(self.bundle.train.x, pre)
        self.pre = pre

    def _task(self, units: int) -> str:
        o, lab = self.opts, self.labels
        if o.task != "auto":
            return o.task
        if lab.kind == "float":
            return "regression"
        if units == 1 and lab.kind == "int" and lab.minimum >= 0 and lab.maximum <= 1:
            return "binary"
        return "classification"

    def _shape_model(self, original):
        """Head replacement, task, loss and metrics, label checks."""
        o, lab = self.opts, self.labels
        self.original_accuracy = None
        self.replaced: list[str] = []
        if o.new_head:
            units = o.new_head
            self.task = self._task(units)
            act = o.head_activation or {"classification": "softmax" if units > 1 else "sigmoid",
                                        "binary": "sigmoid", "regression": "linear"}[self.task]
            model, _head, self.replaced = replace_head(original, units, act)
            if self.task in ("classification", "binary") and self.bundle.val is not None:
                self.original_accuracy = self._argmax_accuracy(original)
        else:
            model = original
            units = int(model.outputs[0].shape[-1] or 1)
            self.task = self._task(units)
        self.units = units
        self._check_labels(model, units, lab)
        self.out_activation = _output_activation(model)
        self.loss, self.metric_objs = self._loss_and_metrics()
        return model

    def _check_labels(self, model, units, lab: LabelInfo):
        y = self.bundle.train.y.display
        head = model.layers[-1].name
        if self.task in ("classification", "binary"):
            if lab.kind == "float":
                raise InputError(f"{y}: targets are real numbers, not class indices; use "
                                 f"task regression")
            if lab.kind == "onehot":
                if lab.classes != units and not (self.task == "binary" and units == 1):
                    raise InputError(f"{y}: one-hot targets of width {lab.classes} but the "
                                     f"output layer {head!r} has {units} units")
                return
            if lab.minimum < 0:
                raise InputError(f"{y}: class labels must be >= 0, found {lab.minimum:g}")
            limit = 2 if self.task == "binary" else units
            if lab.maximum >= limit:
                hint = f"; use new_head {int(lab.maximum) + 1}" if self.task != "binary" \
                    else ""
                raise InputError(f"{y}: labels go up to {int(lab.maximum)} but the output layer "
                                 f"{head!r} has {units} unit(s){hint}")
        else:
            want = (units,)
            if lab.shape not in (want, ()) or (lab.shape == () and units != 1):
                raise InputError(f"{y}: targets of shape {lab.shape} do not fit the output "
                                 f"layer {head!r} with {units} unit(s)")

    def _loss_and_metrics(self):
        o = self.opts
        logits = self.out_activation not in ("softmax", "sigmoid")
        if self.task == "regression":
            loss, metrics = keras.losses.MeanSquaredError(), [
                keras.metrics.MeanAbsoluteError(name="mae")]
        elif self.task == "binary" and self.units == 1:
            loss = keras.losses.BinaryCrossentropy(from_logits=logits)
            metrics = [keras.metrics.BinaryAccuracy(name="accuracy",
                                                    threshold=0.0 if logits else 0.5)]
        elif self.labels.kind == "onehot":
            loss = keras.losses.CategoricalCrossentropy(from_logits=logits)
            metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        self.loss_name = o.loss or type(loss).__name__
        self.metric_names = list(o.metrics) if o.metrics else [m.name for m in metrics]
        return (o.loss or loss), (list(o.metrics) if o.metrics else metrics)

    def _argmax_accuracy(self, model) -> float | None:
        """Accuracy of the original model on the validation data (its argmax against the
        labels): what the model did before its head was replaced."""
        val = self.bundle.val
        reader = BatchReader(val, 256, shuffle=False, seed=0, pre=self.pre)
        hits = total = 0
        try:
            for i in range(len(reader)):
                xb, yb = reader.batch(0, i)
                p = keras.ops.convert_to_numpy(model(xb, training=False))
                pred = (p[:, 0] > 0.5).astype(int) if p.shape[-1] == 1 else p.argmax(-1)
                yt = yb.argmax(-1) if yb.ndim == 2 else yb.reshape(-1)
                hits += int((pred == yt).sum())
                total += len(yb)
        except Exception as e:  # an original model that cannot take the data: no figure
            self.notes.append(f"original model not evaluated: {' '.join(str(e).split())[:200]}")
            return None
        return hits / max(1, total)

    # ----------------------------------------------------------------------------------
    def _phases(self) -> list[Phase]:
        o = self.opts
        layers = compute_layers(self.model)
        names = [lay.name for lay in layers]
        head = names[-1]
        body: list[str] = []
        if o.trainable_from is not None:
            tf_ = o.trainable_from
            if isinstance(tf_, int):
                if not -len(names) <= tf_ < len(names):
                    raise InputError(f"trainable_from {tf_}: the model has {len(names)} layers "
                                     f"(index 0..{len(names) - 1} or -{len(names)}..-1)")
                k = tf_ % len(names)
            else:
                if tf_ not in names:
                    raise InputError(f"trainable_from {tf_!r}: no such layer (layers: "
                                     f"{', '.join(names)})")
                k = names.index(tf_)
            body += names[k:]
        if o.trainable:
            rx = re.compile(o.trainable)
            matched = [n for n in names if rx.search(n)]
            if not matched:
                raise InputError(f"trainable {o.trainable!r} matches no layer (layers: "
                                 f"{', '.join(names)})")
            body += matched
        if o.trainable_from is None and not o.trainable:
            body = [head] if o.new_head else list(names)
        full = [n for n in names if n in set(body) | {head}]
        two = o.new_head is not None and set(full) != {head}
        k = o.head_epochs if o.head_epochs is not None else (o.epochs // 2 if two else 0)
        if not two:
            k = 0 if set(full) != {head} else o.epochs
        phases = []
        if k > 0:
            phases.append(Phase("head", 0, k, [head], o.lr))
        if k < o.epochs or not phases:
            lr = o.lr * o.lr_scale if k > 0 else o.lr
            phases.append(Phase("fine-tune" if k > 0 else "train", k, o.epochs, full, lr))
        self.head_epochs = k
        return phases

    def _apply_trainable(self, names: list[str]) -> None:
        keep = set(names)
        self.model.trainable = True
        for lay in compute_layers(self.model):
            on = lay.name in keep
            if isinstance(lay, keras.layers.BatchNormalization) and not self.opts.train_bn:
                on = False
            lay.trainable = on

    def _frozen_names(self) -> list[str]:
        always = set(self.phases[-1].trainable)
        out = []
        for lay in compute_layers(self.model):
            if not lay.weights:
                continue
            if lay.name not in always or (isinstance(lay, keras.layers.BatchNormalization)
                                          and not self.opts.train_bn):
                out.append(lay.name)
        return out

    def _frozen_digest(self) -> str:
        h = hashlib.sha256()
        by = {lay.name: lay for lay in compute_layers(self.model)}
        for name in self._frozen_names():
            for v in by[name].weights:
                h.update(np.ascontiguousarray(v.numpy()).tobytes())
        return h.hexdigest()

    def _schedule(self, phase: Phase):
        o = self.opts
        steps = self.steps_per_epoch
        total = max(1, (phase.end - phase.start) * steps)
        if o.schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(phase.lr, decay_steps=total)
        if o.schedule == "exponential":
            return keras.optimizers.schedules.ExponentialDecay(
                phase.lr, decay_steps=max(1, steps), decay_rate=o.decay_rate)
        return phase.lr

    def _compile(self, phase: Phase) -> None:
        o = self.opts
        self._apply_trainable(phase.trainable)
        sched = self._schedule(phase)
        cls = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
               "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[o.optimizer]
        kw = {"momentum": 0.9} if o.optimizer == "sgd" else {}
        with self._scope():
            opt = cls(learning_rate=sched, **kw)
            if self.policy == "mixed_float16":  # compile wraps only when the model-level
                opt = keras.optimizers.LossScaleOptimizer(opt)  # policy says so
            metrics = [m if isinstance(m, str) else m.__class__.from_config(m.get_config())
                       for m in self.metric_objs]
            self.model.compile(optimizer=opt, loss=self.loss, metrics=metrics,
                               jit_compile="auto" if o.jit is None else o.jit,
                               steps_per_execution=o.steps_per_execution)
        self.phase = phase

    # ----------------------------------------------------------------------------------
    def _make_feeds(self):
        o = self.opts
        y_dtype = "float32" if self.task == "regression" or self.labels.kind == "onehot" \
            else "int32"
        self.y_dtype = y_dtype
        workers = o.workers if o.workers is not None else (
            1 if keras.backend.backend() == "tensorflow" else 2)
        self.workers = workers
        self.use_processes = o.multiprocessing
        if o.multiprocessing and keras.backend.backend() == "jax":
            # Keras' loader pool forks; JAX runs threads, and a forked copy of a threaded
            # process can deadlock (JAX warns so on stderr): threads load instead
            self.use_processes = False
            msg = (f"multiprocessing loaders are not used under JAX (forking a JAX process "
                   f"may deadlock): {workers} loader threads instead")
            if msg not in self.notes:
                self.notes.append(msg)
                print(f"wtransplant: warning: {msg}", file=sys.stderr)
        if keras.backend.backend() == "tensorflow" and o.workers is None and \
                not o.multiprocessing:
            self.loader = "tf.data"
        else:
            kind = "processes" if self.use_processes else "threads"
            self.loader = f"PyDataset, {workers} loader {kind}"
        from wtransplant.finetuning.tfextras import is_multiworker

        self.multiworker = is_multiworker(self.strategy)
        b = self.bundle
        if self.multiworker:
            from wtransplant.finetuning.tfextras import multiworker_dataset

            def reader_for(ds, shuffle):
                return lambda shard: BatchReader(ds, o.batch_size, shuffle=shuffle,
                                                 seed=self.seed, pre=self.pre,
                                                 augment=shuffle, y_dtype=y_dtype, shard=shard,
                                                 guard=self.guard)

            self.train_input, self.steps_per_epoch = multiworker_dataset(
                self.strategy, reader_for(b.train, True), lambda: self.epoch)
            self.val_input = None
            if b.val is not None:
                self.val_input, _ = multiworker_dataset(self.strategy, reader_for(b.val, False),
                                                        lambda: 0)
            self.train_feed = None
            return
        tr = BatchReader(b.train, o.batch_size, shuffle=True, seed=self.seed, pre=self.pre,
                         augment=True, y_dtype=y_dtype, guard=self.guard)
        vr = None if b.val is None else BatchReader(b.val, o.batch_size, shuffle=False,
                                                    seed=self.seed, pre=self.pre,
                                                    y_dtype=y_dtype, guard=self.guard)
        self.steps_per_epoch = len(tr)
        self.train_feed = None
        if self.loader == "tf.data":
            # TensorFlow: the same batches through a tf.data pipeline that takes them from
            # Python a chunk at a time (PyDataset's per-batch hand-over costs about as much
            # CPU as a training step of a small model)
            from wtransplant.finetuning.tfextras import stream_dataset

            self.train_input = stream_dataset([tr], lambda: self.epoch)
            self.val_input = None if vr is None else stream_dataset([vr], lambda: 0)
            return
        self.train_feed = Feed(tr, workers=workers, use_multiprocessing=self.use_processes)
        self.train_input = self.train_feed
        self.val_input = None if vr is None else Feed(vr, workers=workers,
                                                      use_multiprocessing=self.use_processes)

    def _evaluate(self) -> dict:
        data = self.val_input
        where = "validation"
        if data is None:
            where = "training"
            if self.multiworker:
                return {"data": "none"}
            tr = BatchReader(self.bundle.train, self.opts.batch_size, shuffle=False, seed=0,
                             pre=self.pre, y_dtype=self.y_dtype, guard=self.guard)
            data = Feed(tr, workers=self.workers)
        with self._patches(), self._data_errors(), quick_gil_handover():
            res = self.model.evaluate(data, verbose=0, return_dict=True)
        out = {k: float(v) for k, v in res.items()}
        out["data"] = where
        return out

    @contextlib.contextmanager
    def _data_errors(self):
        """A NaN/Inf sample found by a loader thread or tf.data reaches here wrapped by the
        framework: raise the guard's own one-line error instead."""
        try:
            yield
        except InputError:
            raise
        except Exception:
            if self.guard.error is not None:
                raise self.guard.error from None
            raise

    def _patches(self):
        from wtransplant.finetuning.tfextras import multiworker_patches

        return multiworker_patches(self.strategy) if self.strategy is not None else \
            contextlib.nullcontext()

    def _fit(self, phase: Phase, p_index: int, start: int, early: dict) -> bool:
        cb = _Bookkeeper(self, phase, p_index, early)
        callbacks = [cb, *(self.opts.callbacks or [])]
        tb = self._tensorboard()
        if tb is not None:
            callbacks.append(tb)
        self._progress(f"phase {phase.name!r}: epochs {start + 1}..{phase.end}, lr {phase.lr:g}, "
                       f"{len(phase.trainable)} trainable layer(s) from {phase.trainable[0]!r}")
        with self._patches(), self._data_errors(), quick_gil_handover():
            self.model.fit(self.train_input, validation_data=self.val_input,
                           epochs=phase.end, initial_epoch=start, callbacks=callbacks,
                           verbose=0, shuffle=False)
        return cb.stopped_early

    def _tensorboard(self):
        o = self.opts
        if not o.tensorboard:
            return None
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None or \
                keras.backend.backend() != "tensorflow":
            msg = ("tensorboard skipped: the tensorboard package is not installed "
                   "(tensorflow-cpu does not bring it; pip install tensorboard)"
                   if importlib.util.find_spec("tensorboard") is None else
                   "tensorboard skipped: it needs the TensorFlow backend")
            if msg not in self.notes:
                self.notes.append(msg)
                print(f"wtransplant: warning: {msg}", file=sys.stderr)
            return None
        return keras.callbacks.TensorBoard(log_dir=o.tensorboard)

    # ----------------------------------------------------------------------------------
    # checkpoints

    def _chief(self) -> bool:
        if self.strategy is None:
            return True
        from wtransplant.finetuning.tfextras import is_chief

        return is_chief(self.strategy)

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else \
            contextlib.nullcontext()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**_snapshot(self.model.variables, "model"),
                **_snapshot(self.model.optimizer.variables, "optimizer")}

    def _restore(self, arrays: dict, *, optimizer: bool) -> None:
        with self._scope():
            _assign(self.model.variables, arrays, "model")
            if optimizer:
                opt = self.model.optimizer
                opt.build(self.model.trainable_variables)
                _assign(opt.variables, arrays, "optimizer")

    def _fingerprint(self) -> dict:
        fp = self.opts.fingerprint()
        fp.update(head_epochs=self.head_epochs, model=self.model_info.get("source"),
                  data=str(self.data_arg) if not isinstance(self.data_arg, tuple | list)
                  else "arrays", train_samples=len(self.bundle.train))
        return fp

    def _check_resume(self, state):
        if state is None:
            if self.ckpt_dir is not None and (self.ckpt_dir / records.STATE).exists():
                self.notes.append(f"the checkpoints of an earlier interrupted run in "
                                  f"{self.ckpt_dir} are replaced (use resume to continue one)")
            return
        want, have = state.get("fingerprint") or {}, self._fingerprint()
        diff = [k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        if diff:
            k = diff[0]
            raise InputError(f"resume: the interrupted run had {k}={want.get(k)!r}, this one "
                             f"{k}={have.get(k)!r}; resume with the same options")

    def write_checkpoint(self, epochs_done: int, p_index: int, resume_at: tuple[int, int],
                         early: dict) -> None:
        if self.ckpt_dir is None or not self._chief():
            return
        state = {"seed": self.seed, "deterministic": self.deterministic, "phase": p_index,
                 "resume_phase": resume_at[0], "resume_epoch": resume_at[1],
                 "fingerprint": self._fingerprint(), "rows": self.rows, "early": early,
                 "best": self._best, "evaluation": self.evaluation}
        records.save_checkpoint(self.ckpt_dir, epochs_done, self._arrays(), state)
        if self.opts.restore_best and self._best.get("epoch") == epochs_done - 1:
            records.save_arrays(self.ckpt_dir / "best.npz", self._best_weights)
        crash = os.environ.get(CRASH_ENV)
        if crash and int(crash) == epochs_done:
            sys.stderr.write(f"wtransplant: {CRASH_ENV}={crash}: exiting after epoch "
                             f"{epochs_done} (test hook)\n")
            sys.stderr.flush()
            os._exit(EXIT_CRASH)

    def _restore_best(self):
        best = self._best_weights
        path = self.ckpt_dir / "best.npz" if self.ckpt_dir is not None else None
        if best is None and path is not None and path.exists():  # a resumed run
            with np.load(path, allow_pickle=False) as z:
                best = {k: z[k] for k in z.files}
        if best is None:
            return
        with self._scope():
            _assign(self.model.variables, best, "model")
        self.notes.append(f"restored the weights of epoch {self._best['epoch'] + 1} (best "
                          f"{self._monitor()} {self._best['value']:.4g})")

    _best_weights: dict | None = None

    def _monitor(self) -> str:
        return "val_loss" if self.val_input is not None else "loss"

    # ----------------------------------------------------------------------------------
    # outputs

    provenance_arg = None
    provenance: dict | None = None

    def _input_provenance(self) -> dict | None:
        """Where the input model's weights come from: the report given, else what the
        model file carries."""
        info = self.model_info
        prov = info.pop("provenance", None)
        if self.provenance_arg is not None:
            from wtransplant.provenance import read_report

            rr = read_report(self.provenance_arg)
            out = rr["report"].get("output") or {}
            have = (info.get("input_file") or {}).get("sha256")
            if have and out.get("sha256") and out["sha256"] != have:
                self.notes.append(f"the {rr['kind']} report {self.provenance_arg} describes "
                                  f"another model file than {info.get('source')} (sha256 "
                                  f"differs)")
            return {"source": rr["source"], "spec": rr.get("spec"),
                    "rebuild_report": rr.get("rebuild_report"),
                    "finetune": rr.get("finetune") or [], "from": str(self.provenance_arg)}
        if prov is None and info.get("input_file"):
            self.notes.append("the input model carries no provenance (no .wtransplant.json "
                              "next to it): give its rebuild report to record where its "
                              "weights come from")
        return prov

    def _save(self) -> dict | None:
        if self.output is None or not self._chief():
            return None
        from wtransplant.building.transplanting import save_model

        out = save_model(self.model, self.output)
        if self.provenance is not None:
            from wtransplant.provenance import file_sha256, write_sidecar

            out["sha256"] = file_sha256(out["path"])
            steps = list(self.provenance.get("finetune") or [])
            steps.append({"report": str(self.run_dir / "report.json") if self.run_dir
                          else None, "input_model": self.model_info.get("input_file"),
                          "data": self.bundle.train.x.display, "seed": self.seed})
            side = write_sidecar(out["path"], source=self.provenance["source"],
                                 spec=self.provenance.get("spec"),
                                 rebuild_report=self.provenance.get("rebuild_report"),
                                 finetune=steps)
            out["provenance_file"] = str(side)
        return out

    def _write_records(self, output: dict | None = None) -> None:
        self.report = self._report(output)
        if self.run_dir is None or not self._chief():
            return
        meta = {"wtransplant_history": 1, "status": self.status, "seed": self.seed,
                "provenance": self.provenance}
        files = records.write_history(self.run_dir, self.rows, meta)
        if self.opts.plot:
            title = f"{self.model_info.get('name')} on {self.bundle.train.x.display}"
            png = records.plot_curves(self.run_dir / "curves.png", self.rows, title)
            if png:
                files["curves_png"] = png
        files["report"] = str(self.run_dir / "report.json")
        self.report["files"] = files
        from wtransplant.atomic import write_json

        write_json(self.run_dir / "report.json", self.report)

    def _report(self, output) -> dict:
        from wtransplant.building.transplanting import versions
        from wtransplant.finetuning.tfextras import describe

        # steady state: leave out each phase's first epoch (it traces and compiles)
        speeds = [r["samples_per_s"] for i, r in enumerate(self.rows) if r.get("samples_per_s")
                  and i > 0 and self.rows[i - 1]["phase"] == r["phase"]]
        steady = speeds or [r["samples_per_s"] for r in self.rows if r.get("samples_per_s")]
        layers = compute_layers(self.model)
        return {
            "wtransplant_report": "finetune",
            "status": self.status,
            "model": {**self.model_info, "layers": [lay.name for lay in layers],
                      "replaced_head": self.replaced or None,
                      "head": {"name": layers[-1].name, "units": self.units,
                               "activation": self.out_activation}},
            "provenance": self.provenance,
            "data": self.bundle.describe(),
            "task": self.task, "labels": self.labels.to_dict(),
            "loss": self.loss_name, "metrics": self.metric_names,
            "preprocess": self.pre.to_dict(),
            "phases": [{"name": p.name, "epochs": [p.start + 1, p.end], "lr": p.lr,
                        "trainable": p.trainable} for p in self.phases],
            "frozen": self._frozen_names(),
            "frozen_unchanged": getattr(self, "frozen_unchanged", None),
            "batchnorm": "trained" if self.opts.train_bn else "frozen (inference mode)",
            "loader": self.loader,
            "optimizer": self.opts.optimizer, "schedule": self.opts.schedule,
            "batch_size": self.opts.batch_size,
            "skipped_nonfinite": {"samples": self.guard.count(),
                                  "by_array": {k: sorted(v)[:100] for k, v in
                                               self.guard.skipped.items()}}
            if self.opts.skip_nonfinite else None,
            "precision": {"policy": self.policy, "why": self.policy_why},
            "jit_compile": bool(getattr(self.model, "jit_compile", False)),
            "strategy": describe(self.strategy),
            "backend": keras.backend.backend(), "devices": devices(),
            "seed": self.seed, "deterministic": self.deterministic,
            "epochs_run": len(self.rows), "resumed_from_epoch": self.resumed_from,
            "evaluation": self.evaluation,
            "throughput_samples_per_s": statistics.median(steady) if steady else None,
            "seconds": round(time.perf_counter() - self.t0, 3),
            "output": output,
            "notes": self.notes,
            "failure": getattr(self, "failure", None),
            "versions": versions(),
        }

    def _progress(self, msg: str) -> None:
        if self.opts.progress is not False:
            print(f"wtransplant: {msg}", file=sys.stderr, flush=True)


def _snapshot(variables, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i}": v.numpy() for i, v in enumerate(variables)}


def _assign(variables, arrays: dict, prefix: str) -> None:
    """Assign ``arrays[f"{prefix}/{i}"]`` to the i-th variable, after checking that the
    checkpoint holds as many arrays as there are variables, of the same shapes."""
    n = sum(1 for k in arrays if k.startswith(prefix + "/"))
    if n != len(variables):
        raise InputError(f"resume: the checkpoint holds {n} {prefix} variables, the run has "
                         f"{len(variables)}")
    for i, v in enumerate(variables):
        a = arrays[f"{prefix}/{i}"]
        if tuple(a.shape) != tuple(v.shape):
            raise InputError(f"resume: checkpoint {prefix} variable {i} has shape "
                             f"{tuple(a.shape)}, {v.path} has {tuple(v.shape)}")
        v.assign(a)


#: the interpreter's switch interval while training from the streamed loader (seconds)
LOADER_SWITCH_INTERVAL = 0.0001


@contextlib.contextmanager
def quick_gil_handover():
    """Hand the GIL over sooner while a loader thread (tf.data's generator, PyDataset's
    workers) runs Python beside the training loop. Each training step returns from the
    framework's C++ and must take the GIL back; if the loader holds it, Python makes the
    training thread wait up to the switch interval (5 ms by default), as long as a whole
    step of a small model. Profiled (bench/bench_finetune.py, 3 paired rounds on a busy
    2-core machine): streamed/in-memory 0.90x with 5 ms, 1.09x with 0.5 ms; at batch 32,
    where a step is shortest, 0.64x/0.81x with 0.5 ms and 0.82x/0.88x with 0.1 ms
    (alternating single rounds, loaded machine). Restored on exit."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, LOADER_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class _Bookkeeper(keras.callbacks.Callback):
    """Per epoch: sets the feed's epoch, times the training batches, stops on a NaN/Inf
    loss, keeps the history rows, early stopping and the best epoch, writes the checkpoint
    and prints one progress line.

    ``async_safe``: the per-batch hook (NaN check, progress bar) only reads the logs and
    sets ``stop_training``, so Keras may run it in its callback thread instead of waiting
    for every step's results (Keras flushes those calls before ``on_epoch_end``). The
    training time of an epoch ends where validation begins (``on_test_begin``), without a
    per-batch clock."""

    async_safe = True

    def __init__(self, run: _Run, phase: Phase, p_index: int, early: dict):
        super().__init__()
        self.run, self.phase, self.p_index = run, phase, p_index
        self.wait = int(early.get("wait", 0))
        self.best = early.get("best")
        self.stopped_early = False
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.run.epoch = epoch
        if self.run.train_feed is not None:
            self.run.train_feed.epoch = epoch
        self.t = time.perf_counter()
        self.t_last = None
        self.in_epoch = True
        if self.run.opts.progress is not False:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.run.steps_per_epoch, unit="batch", leave=False,
                            desc=f"epoch {epoch + 1}", disable=None if
                            self.run.opts.progress is None else False)

    def on_test_begin(self, logs=None):
        if getattr(self, "in_epoch", False):  # validation inside fit: training time ends
            self.t_last = time.perf_counter()
            self.in_epoch = False

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n if batch + 1 >= self.bar.total else
                            batch + 1 - self.bar.n)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._diverged(f"the loss became {float(loss)} at epoch {self.run.epoch + 1}, "
                           f"batch {batch + 1}")

    def _diverged(self, what: str):
        run = self.run
        run.status = "diverged"
        run.failure = (f"training diverged: {what} (phase {self.phase.name!r}, lr "
                       f"{self.phase.lr:g}); nothing was saved. Lower lr, check the data "
                       f"for NaN/Inf (wtransplant inspect --stats) or standardise it "
                       f"(standardize)")
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
        run = self.run
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if run.status == "ok":
            bad = [k for k, v in logs.items() if not math.isfinite(v)]
            if bad:
                self._diverged(f"{bad[0]} became {logs[bad[0]]} at epoch {epoch + 1}")
        if run.status != "ok":
            return
        self.in_epoch = False
        secs = (self.t_last or time.perf_counter()) - self.t
        n = len(run.bundle.train)
        if run.multiworker:
            n = run.steps_per_epoch * run.opts.batch_size
        lr = self.model.optimizer.learning_rate
        row = {"epoch": epoch, "phase": self.phase.name,
               "lr": float(lr.numpy() if hasattr(lr, "numpy") else lr), "logs": logs,
               "seconds": round(secs, 4), "samples_per_s": round(n / secs, 1) if secs else None}
        run.rows.append(row)
        mon = run._monitor()
        value = logs.get(mon)
        if value is not None:
            if run._best["value"] is None or value < run._best["value"]:
                run._best = {"value": value, "epoch": epoch}
                if run.opts.restore_best:
                    run._best_weights = _snapshot(self.model.variables, "model")
            if run.opts.patience:
                if self.best is None or value < self.best:
                    self.best, self.wait = value, 0
                else:
                    self.wait += 1
                    if self.wait >= run.opts.patience:
                        self.stopped_early = True
                        self.model.stop_training = True
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate")
        run._progress(f"epoch {epoch + 1}/{run.opts.epochs} [{self.phase.name}] {shown}  "
                      f"({secs:.1f} s, {row['samples_per_s'] or 0:.0f} samples/s)")
        # where a resumed run goes on: the next epoch of this phase, or the next phase
        if self.stopped_early or epoch + 1 >= self.phase.end:
            at = (self.p_index + 1, run.phases[self.p_index + 1].start
                  if self.p_index + 1 < len(run.phases) else epoch + 1)
            early = {}
        else:
            at = (self.p_index, epoch + 1)
            early = {"wait": self.wait, "best": self.best}
        run.write_checkpoint(epoch + 1, self.p_index, at, early)


__all__ = ["finetune", "FinetuneHistory", "load_model", "replace_head", "materialize",
           "compute_layers", "Feed"]
