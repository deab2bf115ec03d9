"""The challenge's constants, defined once (every other module imports them from here)."""

from __future__ import annotations

SIZE_CAP_BYTES = 16_000_000  # artifact = code bytes + compressed model bytes must fit (decimal bytes)
BOS_ID = 1  # every document starts with BOS (official shards); there is no EOS

# Import name -> PyPI distribution of every third-party module pgolf or an exported train_gpt.py
# may import, where the two differ (requirements.txt, the script's start-up check, pgolf doctor).
# FlashAttention 3 installs as flash_attn_3 (wheels: download.pytorch.org/whl/cu130, the records'
# README) and imports as flash_attn_interface.
PIP_NAMES = {
    "flash_attn": "flash-attn",
    "flash_attn_interface": "flash_attn_3",
    "python_minifier": "python-minifier",
    "yaml": "PyYAML",
    "sklearn": "scikit-learn",
    "PIL": "Pillow",
    "cv2": "opencv-python",
    "google": "protobuf",
}


def pip_name(module: str) -> str:
    """The PyPI distribution that provides an import name."""
    return PIP_NAMES.get(module, module)
