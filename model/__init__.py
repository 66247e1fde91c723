"""Next-intent model: data, features, network, training, evaluation and the batched predictor."""
import os

# TensorFlow's C++ start-up chatter (oneDNN notes, CUDA probes on CPU-only machines) is noise for users of this
# package; CLICKSTREAM_TF_LOG=1 shows it (see model.tf_quiet, which also hides what TF prints during import)
if os.environ.get("CLICKSTREAM_TF_LOG", "").strip().lower() in ("", "0", "false", "no"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
