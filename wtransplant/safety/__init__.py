"""Checks that keep hostile input from reaching code that trusts it.

Each submodule is small, imports no Keras/TensorFlow at module level, and is called from
one line at each entry point:

- :mod:`.configs`: model configs and spec layers are data (allow-list of classes and
  arguments; nothing naming a file, module, function or SavedModel); JSON depth bounded.
- :mod:`.paths`: an output path is never one of the inputs (symlinks, hard links).
- :mod:`.graphs`: a SavedModel's ops are listed from ``saved_model.pb`` (parsed as data)
  before it is loaded; file-system, network and process ops are refused.
- :mod:`.polyglot`: a file that is both a zip and HDF5 is refused.
- :mod:`.text`: strings from files escaped before they reach a terminal or YAML.
- :mod:`.bounds`: sizes and depths checked before allocation or recursion.
"""
