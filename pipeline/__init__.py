"""Amazon review sentiment pipeline: data -> BPE -> BiGRU teacher -> compression -> ESP32.

tfmot only accepts tf_keras models, so the legacy Keras is selected before TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
