"""Import Keras/TensorFlow without their C++ start-up chatter on stderr.

TensorFlow's CUDA stub logs through absl before TF_CPP_MIN_LOG_LEVEL takes effect
("Could not find cuda drivers...", twice per process). The CLI promises one line on stderr
per problem, so file descriptor 2 goes to a temporary file while Keras (and its backend)
start; what was captured is replayed only if the import fails.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from wtransplant.quiet_tf import install as _install_quiet_tf  # noqa: E402

# before anything can import TensorFlow: under JAX/PyTorch Keras imports it lazily, later
_install_quiet_tf()


def choose_backend(command: str, layer_classes=None, *, needs_tensorflow=None):
    """Pick the Keras backend of this command before Keras is imported (an explicit
    KERAS_BACKEND always wins; see wtransplant.backend) and record why for the report."""
    from wtransplant.backend import apply_backend
    from wtransplant.backend import choose_backend as choose

    name, why = choose(command, layer_classes, needs_tensorflow=needs_tensorflow)
    apply_backend(name, why)
    return name, why


def import_keras(*, plain_dtypes: bool = False):
    """Import Keras quietly. ``plain_dtypes``: the model is known to use none of
    ml_dtypes' types (bfloat16, float8, ...): on the numpy backend ml_dtypes is then
    imported only if something asks for it (wtransplant.backend.defer_jax)."""
    if "keras" in sys.modules and getattr(import_keras, "_done", False):
        return sys.modules["keras"]
    from wtransplant.quiet_tf import quiet_stderr

    # Keras imports matplotlib (keras.visualization) and requests (RemoteMonitor) at
    # start-up, which the CLI never uses: under the light backends they are skipped
    # (`import` raises ImportError, which Keras tolerates; our own plots import matplotlib
    # when asked, as usual), and on the numpy backend JAX waits for its first use
    # (wtransplant.backend.defer_jax): Keras starts in about half the time
    light = os.environ.get("KERAS_BACKEND") in ("numpy", "jax")
    blocked = [m for m in ("matplotlib", "matplotlib.pyplot", "requests")
               if light and m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None
    if os.environ.get("KERAS_BACKEND") == "numpy":
        from wtransplant.backend import defer_jax

        defer_jax(ml_dtypes=plain_dtypes)
    try:
        with quiet_stderr(replay=True):  # what TF said is shown only if the import fails
            import keras

            keras.ops.convert_to_numpy(keras.ops.zeros((1,)))  # device start-up logs too
    finally:
        for m in blocked:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]
    from wtransplant.backend import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()  # saving under numpy/jax need not start TensorFlow
    import_keras._done = True
    return keras
