"""Modules imported on first use, so that ``wtransplant inspect`` of a plain HDF5 file
(reading/h5lean.py) starts without NumPy or h5py: modules on its import path name them
through :func:`lazy` and pay the import only when a function really uses them."""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for module ``name``; the first attribute read imports it. Each attribute is
    then cached on this object, so later reads cost one dictionary lookup."""

    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self.__dict__["_name"]), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_name']!r}>"


def lazy(name: str) -> LazyModule:
    return LazyModule(name)
