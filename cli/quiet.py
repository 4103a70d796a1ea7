"""Import Keras/TensorFlow without their C++ start-up chatter on stderr.

TensorFlow's CUDA stub logs through absl before TF_CPP_MIN_LOG_LEVEL takes effect
("Could not find cuda drivers...", twice per process). The CLI promises one line on stderr
per problem, so file descriptor 2 goes to a temporary file while Keras (and its backend)
start; what was captured is replayed only if the import fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 goes to a temporary file inside the block; what was captured is
    replayed if the block fails with anything but a user error (a WTError prints its own
    one line)."""
    from wtransplant.errors import WTError

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as cap:
        os.dup2(cap.fileno(), 2)
        try:
            yield
        except WTError:
            raise
        except BaseException:
            os.dup2(saved, 2)
            cap.seek(0)
            sys.stderr.write(cap.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras():
    if "keras" in sys.modules and getattr(import_keras, "_done", False):
        return sys.modules["keras"]
    with quiet_stderr():
        import keras

        keras.ops.convert_to_numpy(keras.ops.zeros((1,)))  # device start-up logs too
    import_keras._done = True
    return keras
