"""Text to ids: normalization specs v1 and v2 and SentencePiece BPE (``tokenizer``), the C tokenizer's
tables (``ctables``) and its host build (``ctok``)."""
