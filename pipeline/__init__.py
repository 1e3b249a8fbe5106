"""Amazon review sentiment pipeline: data -> BPE -> BiGRU teacher -> compression -> ESP32.

tfmot only accepts tf_keras models, so the legacy Keras is selected before TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_logging(quiet: bool = False) -> None:
    """Progress logging for the long-running CLIs: ``HH:MM:SS logger message`` on stderr."""
    import logging

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)
