"""wtransplant's own Keras layers, for what stock layers cannot express exactly (layer 2).

``TorchPooling``: PyTorch's ``MaxPoolNd``/``AvgPoolNd`` with explicit integer padding and
``ceil_mode``. Max pooling pads with the dtype's lowest value (padded positions never win);
average pooling pads with zeros and rescales each output by prod(k) / PyTorch's divisor
(``count_include_pad`` True: positions inside the input and its explicit padding; False:
real positions only). Built only from ``keras.ops`` (pad, max_pool, average_pool,
multiply), so it runs on every backend and exports to SavedModel/ONNX like stock layers.

Registered serialisable (``wtransplant>TorchPooling``): a saved ``.keras`` loads with
``keras.models.load_model`` after ``import wtransplant``.
"""

from __future__ import annotations

import keras
import numpy as np

from wtransplant.planning.torchgeom import avg_correction, extra_right, pool_out


@keras.saving.register_keras_serializable(package="wtransplant")
class TorchPooling(keras.layers.Layer):
    """PyTorch pooling on a channels-last map: ``mode`` 'max' or 'avg'."""

    def __init__(self, mode="max", pool_size=(2, 2), strides=None, padding=(0, 0),
                 ceil_mode=False, count_include_pad=True, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode
        self.pool_size = tuple(int(x) for x in pool_size)
        nd = len(self.pool_size)
        self.strides = tuple(int(x) for x in (strides or self.pool_size))
        self.padding = tuple(int(x) for x in padding)
        if len(self.strides) != nd or len(self.padding) != nd:
            raise ValueError("pool_size, strides and padding need one value per spatial axis")
        if any(2 * p > k for p, k in zip(self.padding, self.pool_size)):
            raise ValueError(f"padding {self.padding} must be at most half of pool_size "
                             f"{self.pool_size} (as in PyTorch)")
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._pads = None
        self._factor = None

    def _geometry(self, spatial):
        if any(n is None for n in spatial):
            raise ValueError("TorchPooling needs static spatial sizes (ceil mode and the "
                             "average divisors depend on them)")
        pads = [(0, 0)]
        for n, k, s, p in zip(spatial, self.pool_size, self.strides, self.padding):
            pads.append((p, p + extra_right(n, k, s, p, self.ceil_mode)))
        pads.append((0, 0))
        factor = None
        if self.mode == "avg":
            f = avg_correction(tuple(spatial), self.pool_size, self.strides, self.padding,
                               self.ceil_mode, self.count_include_pad)
            if not np.allclose(f, 1.0, rtol=0, atol=0):
                factor = f[None, ..., None].astype("float32")
        return pads, factor

    def build(self, input_shape):
        self._pads, self._factor = self._geometry(tuple(input_shape[1:-1]))

    def call(self, x):
        if self._pads is None:
            self.build(x.shape)
        if any(p != (0, 0) for p in self._pads):
            fill = 0.0 if self.mode == "avg" else float(np.finfo(np.float32).min)
            x = keras.ops.pad(x, self._pads, constant_values=fill)
        if self.mode == "max":
            return keras.ops.max_pool(x, self.pool_size, self.strides, padding="valid")
        y = keras.ops.average_pool(x, self.pool_size, self.strides, padding="valid")
        if self._factor is not None:
            y = y * keras.ops.cast(keras.ops.convert_to_tensor(self._factor), y.dtype)
        return y

    def compute_output_shape(self, input_shape):
        out = [input_shape[0]]
        for n, k, s, p in zip(input_shape[1:-1], self.pool_size, self.strides, self.padding):
            out.append(None if n is None else pool_out(n, k, s, p, self.ceil_mode))
        return tuple(out) + (input_shape[-1],)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(mode=self.mode, pool_size=list(self.pool_size), strides=list(self.strides),
                   padding=list(self.padding), ceil_mode=self.ceil_mode,
                   count_include_pad=self.count_include_pad)
        return cfg


CUSTOM_CLASSES = {"TorchPooling": TorchPooling}
