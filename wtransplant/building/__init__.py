"""Stage 3, building (the public Keras API, any backend): build the Keras model a spec
describes, assign the planned tensors one at a time, check parity and save
(``wtransplant rebuild``)."""
