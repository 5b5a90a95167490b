"""Importing and running TensorFlow quietly.

TensorFlow writes to file descriptor 2 from C++ (absl's "All log messages
before absl::InitializeLog()", oneDNN notices) whatever TF_CPP_MIN_LOG_LEVEL
says, so graph jobs run with fd 2 pointed at a temp file; with --debug the
noise is shown as it comes.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from ckpttool.errors import BadInput, CkptError, Unsupported


def _debug() -> bool:
    return os.environ.get("CKPTTOOL_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def quiet_stderr():
    """Send fd 2 to a temp file for the duration (unless debugging)."""
    if _debug():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def tensorflow():
    """The tensorflow module, imported once, quietly."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        try:
            import tensorflow as tf
        except ImportError:
            raise Unsupported("this command needs TensorFlow, which is not installed",
                              hint="pip install 'ckpttool[graph]' (or tensorflow-cpu)") from None
        import logging
        import warnings

        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
        warnings.filterwarnings("ignore", module=r"tensorflow\..*")
        warnings.filterwarnings("ignore", module=r"keras\..*")
    return tf


def first_line(exc: BaseException) -> str:
    """The gist of an exception. TensorFlow's messages run to many lines: headers
    ending in ':' ("Graph execution error:", "... Original error:") introduce the
    cause, followed by node names, stack frames and advice."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    causes = [line for line in lines if not line.endswith(":") and not line.startswith(("Node: ", "[[", "File "))]
    return (causes or lines or [type(exc).__name__])[0]


@contextlib.contextmanager
def tensorflow_errors(action: str, hint: str | None = None):
    """Turn whatever TensorFlow raises on a user's file into one line, exit 3.

    Wrap only calls into TensorFlow on user input: on such files TensorFlow
    raises OpError subclasses, ValueError, KeyError, TypeError, even
    AttributeError (an object it cannot revive), none of them ckpttool bugs.
    """
    try:
        yield
    except CkptError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise BadInput(f"TensorFlow could not {action}: {first_line(exc)}", hint=hint) from exc
