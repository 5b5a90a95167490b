"""Keras files: Keras 3 `.weights.h5` / `.keras` and legacy Keras HDF5 readers, archive metadata, and the
Keras 3 writer behind `convert --like`, the probe that tells a Keras file and its wholeness from a few bytes.
May import formats/ (dtypes, variables, npz) and storage/; never formats/tf/."""
