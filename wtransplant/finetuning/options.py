"""The options of a fine-tuning run, as plain data (no Keras import), shared by the library
call :func:`wtransplant.finetune` and the ``wtransplant finetune`` command."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from wtransplant.errors import InputError

TASKS = ("auto", "classification", "binary", "regression")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")
PRECISIONS = ("auto", "float32", "mixed", "mixed_bfloat16")
STRATEGIES = (None, "none", "mirrored", "multiworker")
FLIPS = (None, "horizontal", "vertical", "both")


@dataclass
class FinetuneOptions:
    # data
    x: str | None = None
    y: str | None = None
    val_data: object = None
    val_x: str | None = None
    val_y: str | None = None
    val_split: float | None = None
    skip_nonfinite: bool = False  # leave out samples holding NaN/Inf (else: an input error)
    # training
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    decay_rate: float = 0.5  # exponential: factor per epoch
    # transfer learning
    trainable_from: str | int | None = None
    trainable: str | None = None  # regex on layer names
    new_head: int | None = None
    head_activation: str | None = None  # default from the task
    head_epochs: int | None = None  # default: half the epochs when there are two phases
    lr_scale: float = 0.1
    train_bn: bool = False
    task: str = "auto"
    loss: str | None = None
    metrics: list[str] | None = None
    # preprocessing
    rescale: float | None = None  # default 1/255 for image folders
    standardize: bool = False
    flip: str | None = None
    rotation: float = 0.0
    # speed
    precision: str = "auto"
    jit: bool | None = None  # None: Keras' "auto"
    steps_per_execution: int = 1
    strategy: object = None
    workers: int | None = None  # loader threads; None: 1 under TensorFlow (tf.data
    # prefetches), 2 elsewhere
    multiprocessing: bool = False
    # robustness and outputs
    patience: int = 0
    restore_best: bool = False
    seed: int | None = None
    run_dir: str | None = None
    resume: bool = False
    checkpoints: bool = True
    keep_checkpoints: bool = False
    tensorboard: str | None = None
    plot: bool = True
    progress: bool | None = None  # None: per-epoch lines on stderr, bars when a terminal
    callbacks: list | None = None  # more keras.callbacks.Callback objects (library only)
    extra: dict = field(default_factory=dict)

    def validate(self) -> FinetuneOptions:
        def positive(name, minimum=1):
            v = getattr(self, name)
            if v is not None and v < minimum:
                raise InputError(f"{name} must be at least {minimum}, got {v}")

        for name in ("epochs", "batch_size", "new_head", "steps_per_execution"):
            positive(name)
        for name in ("head_epochs", "patience"):
            positive(name, 0)
        if self.workers is not None:
            positive("workers", 0)
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if not self.lr_scale > 0:
            raise InputError(f"lr_scale must be positive, got {self.lr_scale}")
        for name, allowed in (("task", TASKS), ("optimizer", OPTIMIZERS),
                              ("schedule", SCHEDULES), ("precision", PRECISIONS),
                              ("flip", FLIPS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} {getattr(self, name)!r}: use one of "
                                 f"{', '.join(a for a in allowed if a)}")
        if isinstance(self.strategy, str) and self.strategy not in STRATEGIES:
            raise InputError(f"strategy {self.strategy!r}: use mirrored or multiworker")
        if self.head_epochs is not None and self.head_epochs > self.epochs:
            raise InputError(f"head_epochs {self.head_epochs} is more than epochs "
                             f"{self.epochs}")
        if self.val_split is not None and not 0 < self.val_split < 1:
            raise InputError(f"val_split must be between 0 and 1, got {self.val_split}")
        if self.rotation < 0 or self.rotation > 180:
            raise InputError(f"rotation must be 0..180 degrees, got {self.rotation}")
        if self.trainable:
            try:
                re.compile(self.trainable)
            except re.error as e:
                raise InputError(f"trainable {self.trainable!r} is not a valid regular "
                                 f"expression: {e}") from None
        if isinstance(self.trainable_from, str) and re.fullmatch(r"-?\d+",
                                                                 self.trainable_from):
            self.trainable_from = int(self.trainable_from)
        if not 0 < self.decay_rate <= 1:
            raise InputError(f"decay_rate must be in (0, 1], got {self.decay_rate}")
        return self

    def fingerprint(self) -> dict:
        """What must not change between an interrupted run and its --resume."""
        keep = ("x", "y", "val_x", "val_y", "val_split", "batch_size", "lr", "optimizer",
                "schedule", "decay_rate", "trainable_from", "trainable", "new_head",
                "head_activation", "head_epochs", "lr_scale", "train_bn", "task", "loss",
                "metrics", "rescale", "standardize", "flip", "rotation", "precision",
                "seed")
        d = dataclasses.asdict(self)
        return {k: d[k] for k in keep}


#: the command's flags that are not fields, and the field each one turns off:
#: ``quiet=True`` is ``progress=False``, ``no_plot=True`` is ``plot=False``
FLAG_ALIASES = {"quiet": "progress", "no_plot": "plot"}


def make_options(**kw) -> FinetuneOptions:
    """Options from keyword arguments: the fields of :class:`FinetuneOptions`, which are the
    ``finetune`` command's options with underscores (``quiet`` and ``no_plot`` included;
    ``metrics`` may be a comma-separated string as on the command line).

    Args:
        **kw: option name -> value.

    Returns:
        The validated options.

    Raises:
        TypeError: an unknown keyword (a misspelt option), or an option given twice.
        InputError: a value out of range (the message names the keyword, not a flag).
    """
    for alias, target in FLAG_ALIASES.items():
        if kw.pop(alias, False):
            if kw.get(target):
                raise TypeError(f"finetune() got {alias}=True and {target}=True")
            kw[target] = False
    if isinstance(kw.get("metrics"), str):
        kw["metrics"] = [m.strip() for m in kw["metrics"].split(",") if m.strip()] or None
    names = {f.name for f in dataclasses.fields(FinetuneOptions)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise TypeError(f"finetune() got unknown option(s): {', '.join(unknown)}")
    return FinetuneOptions(**kw).validate()
