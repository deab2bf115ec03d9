"""pgolf: train, compress and score language models for OpenAI's Parameter Golf challenge."""

__version__ = "0.1.0"
