"""Layout knowledge: one registered entry per Keras layer type (see ``layers.py``)."""

from wtransplant.planning.layouts.base import (
           CONVENTIONS,
           LayerLayout,
           NotSupported,
           Proposal,
           TargetLayer,
           TargetVar,
           Unit,
)
from wtransplant.planning.layouts.layers import REGISTRY, layout_for, recognize, register
from wtransplant.planning.layouts.onnxconv import register as _register_onnx

_register_onnx()  # the onnx convention (torch's methods + ONNX's recurrent ops)

__all__ = ["CONVENTIONS", "LayerLayout", "NotSupported", "Proposal", "REGISTRY", "TargetLayer", "TargetVar",
           "Unit", "layout_for", "recognize", "register"]
