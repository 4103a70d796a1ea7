"""Source containers (HDF5, safetensors, NumPy, ONNX...) behind one interface: see
:mod:`wtransplant.reading.sources.base`."""

from wtransplant.reading.sources.base import (
    REGISTRY,
    Source,
    SourceInfo,
    as_source,
    open_source,
    register,
)

__all__ = ["REGISTRY", "Source", "SourceInfo", "as_source", "open_source", "register"]
