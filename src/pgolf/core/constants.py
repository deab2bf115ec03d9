"""The challenge's constants, defined once (every other module imports them from here)."""

from __future__ import annotations

SIZE_CAP_BYTES = 16_000_000  # artifact = code bytes + compressed model bytes must fit (decimal bytes)
BOS_ID = 1  # every document starts with BOS (official shards); there is no EOS
