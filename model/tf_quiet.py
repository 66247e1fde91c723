"""Import TensorFlow without its start-up noise (CUDA probes, oneDNN notes), unless CLICKSTREAM_TF_LOG is set.

On a CPU-only machine TensorFlow prints "Could not find cuda drivers" and "failed call to cuInit" lines on
stderr, some as "E" lines that read like failures. Its C++ logging starts before ``TF_CPP_MIN_LOG_LEVEL`` is
read for some of them, so the import itself runs with the process's stderr pointed at /dev/null. A failing
import still raises, with its Python traceback. ``CLICKSTREAM_TF_LOG=1`` leaves TensorFlow's logging alone.
"""
from __future__ import annotations

import os
import sys
from typing import Any

SHOW_ENV = "CLICKSTREAM_TF_LOG"


def show_tensorflow_log() -> bool:
    return os.environ.get(SHOW_ENV, "").strip().lower() not in ("", "0", "false", "no")


def import_tensorflow() -> Any:
    """``import tensorflow``, quietly unless CLICKSTREAM_TF_LOG is set; returns the module."""
    if "tensorflow" in sys.modules or show_tensorflow_log():
        import tensorflow as tf

        return tf
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; nothing to quieten without it
        pass
    return tf
