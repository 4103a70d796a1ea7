"""Layout knowledge: one registered entry per Keras layer type (see ``layers.py``)."""

from .base import CONVENTIONS, LayerLayout, Proposal, TargetLayer, TargetVar, Unit
from .layers import REGISTRY, layout_for, recognize, register

__all__ = ["CONVENTIONS", "LayerLayout", "Proposal", "REGISTRY", "TargetLayer", "TargetVar",
           "Unit", "layout_for", "recognize", "register"]
