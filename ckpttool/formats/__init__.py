"""On-disk formats of TensorFlow checkpoints, implemented without TensorFlow."""
