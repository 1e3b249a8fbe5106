"""Compression of the student: knowledge distillation (``distill``, ``afd``), Lottery Ticket
pruning (``prune``) and quantization-aware training (``qat``)."""
