"""Orbax checkpoints read without JAX (what Orbax's CheckpointManager, Keras 3's OrbaxCheckpoint,
Flax and the Orbax v1 API write): the tree from the metadata files (tree.py), the arrays through
TensorStore (store.py; the `ckpttool[orbax]` extra, imported only when an Orbax checkpoint is
opened), the reader the commands use (reader.py) and what `verify` can check of the store
(checks.py). Never imports jax or orbax. See docs/guides/orbax.md."""
