"""What a finished run produced: the Summary written as summary.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from pgolf.eval.scoring import Score


@dataclass
class Summary:
    """What a run produced (written as summary.json)."""

    run_id: str
    preset: str
    params: int
    steps: int
    train_time_ms: float
    tokens_seen: int
    pre_quant: dict = field(default_factory=dict)
    roundtrip: dict = field(default_factory=dict)
    sliding: dict = field(default_factory=dict)
    artifact_path: str = ""
    artifact_bytes: int = 0
    code_bytes: int = 0
    total_bytes: int = 0
    size_cap_bytes: int = 0
    codec: str = ""
    scheme: str = ""
    eval_seconds: dict = field(default_factory=dict)
    cap_fit: dict = field(default_factory=dict)  # what cap fitting pruned or dropped (empty: nothing)
    documents: dict = field(default_factory=dict)  # the configured document evaluation (TTT, tilt), when on


def score_dict(score: Score) -> dict:
    return {"val_loss": score.val_loss, "val_bpb": score.val_bpb, "tokens": score.tokens, "bytes": score.bytes}
