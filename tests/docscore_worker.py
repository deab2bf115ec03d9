"""Worker for test_docscore_distributed: the configured evaluator under torchrun (gloo)."""

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from pgolf.eval.docscore import evaluate_documents  # noqa: E402
from test_docscore import BOS, ecfg, make_model, make_stream, make_tables  # noqa: E402


def main(out: str) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    cfg = ecfg(
        ttt=True,
        ttt_rank=4,
        ttt_chunk=8,
        ttt_lr=0.05,
        ttt_phase_docs="5",
        ttt_global_lr=0.05,
        ttt_global_chunk_tokens=64,
        tilt_order=6,
        tilt_min_order=2,
        doc_batch=3,
    )
    res = evaluate_documents(
        make_model(), make_stream(n_docs=11), make_tables(), cfg, 16, BOS, rank=rank, world_size=world
    )
    if rank == 0:
        with open(out, "w") as f:
            json.dump(
                {
                    "loss_sum": res.score.loss_sum,
                    "tokens": res.score.tokens,
                    "bytes": res.score.bytes,
                    "nll": res.nll.tolist(),
                    "counts": res.counts.tolist(),
                },
                f,
            )
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
