"""The Keras networks (``models``), their training loop (``train``) and ``tf.distribute``
training (``distribute``)."""
