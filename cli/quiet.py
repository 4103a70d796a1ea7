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


def import_keras():
    if "keras" in sys.modules and getattr(import_keras, "_done", False):
        return sys.modules["keras"]
    from wtransplant.quiet_tf import quiet_stderr

    # Keras imports matplotlib.pyplot at start-up only for keras.visualization, which the
    # CLI never calls: under the light backends, skip it (our own plots import pyplot when
    # asked, as usual)
    block_pyplot = "matplotlib.pyplot" not in sys.modules and \
        os.environ.get("KERAS_BACKEND") in ("numpy", "jax")
    if block_pyplot:
        sys.modules["matplotlib.pyplot"] = None  # `import` raises ImportError: Keras skips it
    try:
        with quiet_stderr(replay=True):  # what TF said is shown only if the import fails
            import keras

            keras.ops.convert_to_numpy(keras.ops.zeros((1,)))  # device start-up logs too
    finally:
        if block_pyplot and sys.modules.get("matplotlib.pyplot", 0) is None:
            del sys.modules["matplotlib.pyplot"]
    from wtransplant.backend import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()  # saving under numpy/jax need not start TensorFlow
    import_keras._done = True
    return keras
