"""Next-intent model: data, features, network, training, evaluation and the batched predictor."""
import os

# TensorFlow's C++ start-up chatter (oneDNN notes, CPU feature lists) is noise for users of this package.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
