"""What files mean, without TensorFlow: the reader registry, the shared variable and dtype model, one
module per non-TF format (safetensors, npz, event files, trainer_state.json), keras/, tf/ and pytorch/
for those frameworks' formats. May import storage/ (and the registry its subpackages); never ops/, cli/ or graph/."""
