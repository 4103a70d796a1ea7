"""Layer 1 (json, hashlib): where a model's weights come from, carried from stage to stage.

A model that ``rebuild`` or ``finetune`` saves gets a provenance sidecar next to it,
``OUT.wtransplant.json`` (the same name ``export`` writes next to its files)::

    {"wtransplant_provenance": 1,
     "source": {"path", "sha256", "size", "format", ...},   # the original weights file
     "spec": {...} | null,                                  # what the model was built from
     "rebuild_report": {"path", "sha256"} | null,
     "finetune": [{"report", "input_model": {"path", "sha256"}, "data"}, ...],
     "model_file": {"path", "sha256", "size"}}             # the file this sidecar describes

``finetune`` reads its input model's sidecar (or a report given with ``provenance=``) and
writes one for its output with a ``finetune`` step added, so ``export`` of a fine-tuned
transplant still names the original weights' sha256. A sidecar whose ``model_file.sha256``
is not the model's own sha256 describes another file and is ignored.

Reports given explicitly (``export --provenance R.json``, ``finetune --provenance
R.json``) may be a rebuild report (``wtransplant_report: rebuild``) or a finetune report
(``wtransplant_report: finetune``, with a ``provenance`` entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from wtransplant.errors import InputError, one_line

SIDECAR_SUFFIX = ".wtransplant.json"
MAX_REPORT_BYTES = 64 << 20
_SHA = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sidecar_of(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _read_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise InputError(f"{what} larger than {MAX_REPORT_BYTES >> 20} MiB", path=str(path))
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=str(path)) from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a JSON {what}: {one_line(e)}",
                         path=str(path)) from None
    if not isinstance(data, dict):
        raise InputError(f"not a wtransplant {what} (not a JSON object)", path=str(path))
    return data


def _valid_source(src) -> bool:
    return isinstance(src, dict) and isinstance(src.get("sha256"), str) and \
        bool(_SHA.match(src["sha256"]))


def read_report(path: str | os.PathLike) -> dict:
    """A rebuild or finetune report as provenance: ``{"source", "spec", "rebuild_report",
    "finetune", "kind", "report": {"path", "sha256", "output"}}``. Raises InputError if the
    file is neither or names no source sha256."""
    p = Path(path)
    data = _read_json(p, "report")
    kind = data.get("wtransplant_report")
    own = {"path": str(p), "sha256": file_sha256(p), "kind": kind,
           "output": data.get("output") if isinstance(data.get("output"), dict) else None}
    if kind == "rebuild" and _valid_source(data.get("source")):
        return {"kind": "rebuild", "source": data["source"], "spec": data.get("spec"),
                "rebuild_report": {"path": str(p), "sha256": own["sha256"],
                                   "parity": (data.get("parity") or {}).get("max_rel"),
                                   "verified": data.get("verified"),
                                   "unverified_reason": data.get("unverified_reason")},
                "finetune": [], "report": own}
    if kind == "finetune":
        prov = data.get("provenance")
        if isinstance(prov, dict) and _valid_source(prov.get("source")):
            steps = list(prov.get("finetune") or [])
            steps.append({"report": str(p), "report_sha256": own["sha256"],
                          "input_model": (data.get("model") or {}).get("input_file"),
                          "data": ((data.get("data") or {}).get("train") or {}).get("x")})
            return {"kind": "finetune", "source": prov["source"], "spec": prov.get("spec"),
                    "rebuild_report": prov.get("rebuild_report"), "finetune": steps,
                    "report": own}
        raise InputError("a finetune report that names no source weights (its input model "
                         "carried no provenance): give the rebuild report instead",
                         path=str(p))
    raise InputError("not a wtransplant rebuild or finetune report (no wtransplant_report: "
                     "rebuild with source.sha256, or finetune with provenance.source)",
                     path=str(p))


def read_sidecar(model_path: str | os.PathLike) -> dict | None:
    """The provenance sidecar of a model file, or None if there is none, it is not valid,
    or it describes another file (its ``model_file.sha256`` differs)."""
    side = sidecar_of(model_path)
    if not side.is_file():
        return None
    try:
        data = _read_json(side, "provenance sidecar")
    except InputError:
        return None
    if not _valid_source(data.get("source")):
        return None
    mf = data.get("model_file")
    if isinstance(mf, dict) and mf.get("sha256"):
        try:
            if file_sha256(model_path) != mf["sha256"]:
                return None
        except OSError:
            return None
    return data


def write_sidecar(model_path: str | os.PathLike, *, source: dict, spec=None,
                  rebuild_report: dict | None = None, finetune: list | None = None) -> Path:
    """Write ``MODEL.wtransplant.json`` describing ``model_path`` (already written)."""
    from wtransplant.atomic import write_json

    p = Path(model_path)
    side = sidecar_of(p)
    write_json(side, {"wtransplant_provenance": 1, "source": source, "spec": spec,
                      "rebuild_report": rebuild_report, "finetune": list(finetune or []),
                      "model_file": {"path": str(p), "sha256": file_sha256(p),
                                     "size": p.stat().st_size}})
    return side


__all__ = ["read_report", "read_sidecar", "write_sidecar", "sidecar_of", "file_sha256"]
