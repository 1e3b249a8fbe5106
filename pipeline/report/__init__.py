"""Measuring and telling: metrics and evaluation stages (``metrics``, ``predictors``), plots, the
report, the TF-IDF and fastText peers, and the model-size sweep."""
