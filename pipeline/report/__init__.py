"""Measuring and telling: metrics and evaluation stages (``metrics``, ``predictors``), plots, the
report, the TF-IDF and fastText peers, the model-size sweep and the release gate (``gate``)."""
