"""Stage 6, exporting (TensorFlow, tf2onnx, onnxruntime on request): write a model as
``.keras``, ``.h5``, SavedModel, ONNX or LiteRT and check the result (``wtransplant
export``)."""
