"""Child process of ``wtransplant export`` under a Keras backend other than TensorFlow.

SavedModel, ONNX and LiteRT files are written by TensorFlow (tf.function tracing, tf2onnx,
the LiteRT converter), which cannot trace a model whose variables live in JAX or PyTorch.
A ``.keras`` archive is backend-independent, so the parent saves the model as one and runs

    KERAS_BACKEND=tensorflow python -m wtransplant.exporting._tfexport JOB.json

which loads the archive under TensorFlow (with the same safety checks as any input) and
runs the same writer the TensorFlow backend uses (the format's ``write``). It prints one JSON line on stdout:
``{"ok": true, "info": {...}}`` or ``{"ok": false, "class": ..., "error": ...}``. The parent
reloads the written file in its own runtime and checks it against the model as it runs
under the parent's backend.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def run_job(job: dict) -> dict:
    from wtransplant.errors import WTError
    from wtransplant.quiet_tf import quiet_logs
    from wtransplant.runtimes import Unsupported, get
    from wtransplant.runtimes.keras import KerasArtifact, load_keras_archive

    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"the export child runs under {keras.backend.backend()}, "
                               f"not tensorflow")
        model = load_keras_archive(Path(job["model"]))
        src = KerasArtifact(model, Path(job["display"]), job.get("kind") or "model")
        fmt = job["format"]
        with quiet_logs("tf2onnx", "tensorflow", "absl"):
            info = get(fmt).write(src, Path(job["output"]), job["provenance"],
                                  opset=job.get("opset"))
        return {"ok": True, "info": info or {}}
    except WTError as e:
        return {"ok": False, "class": type(e).__name__, "error": str(e),
                "exit": e.exit_code, "unsupported": isinstance(e, Unsupported)}
    except Exception as e:  # reported by the parent in one line
        text = " ".join(str(e).split())[:400]
        return {"ok": False, "class": "internal", "error": f"{type(e).__name__}: {text}"}


def main(argv: list[str]) -> int:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from wtransplant.quiet_tf import install

    install()
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out = run_job(job)
    sys.stdout.write("\n" + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - run by export._write_in_tensorflow
    sys.exit(main(sys.argv))
