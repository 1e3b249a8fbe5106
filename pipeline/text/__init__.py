"""Text to ids: normalization spec v1 and SentencePiece BPE (``tokenizer``), the C tokenizer's
tables (``ctables``) and its host build (``ctok``)."""
