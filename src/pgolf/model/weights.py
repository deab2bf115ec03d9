"""Loading weights into a model: strict, with a one-line error naming the file when they do not fit
(a checkpoint or artifact from another config is the usual cause)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from pgolf.core.errors import PgolfError


class WeightsMismatchError(PgolfError, ValueError):
    """Weights whose names or shapes do not match the model built from the config."""


def load_matching(model: nn.Module, state: dict[str, Tensor], source: Path | str) -> None:
    """model.load_state_dict(state, strict=True), or a WeightsMismatchError naming `source`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise WeightsMismatchError(f"{source}: weights do not match this model config ({summary})") from None
