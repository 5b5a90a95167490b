"""ckpttool: a fast, safe, scriptable tool for TensorFlow checkpoint directories."""

__version__ = "0.1.0"
