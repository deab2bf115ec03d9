"""Tokens in: the official shard format (read, write, validate), SentencePiece tokenizers and the
per-token byte tables the score divides by, building shards and tokenizers from documents,
downloading the official export, locating a run's data and checking that tokenizer, vocabulary
and shards agree, and the training token stream with its distributed loader. Depends on core."""
