"""The score: val_loss and val_bpb by the official definition (non-overlapping or sliding
windows, batched and split across ranks with identical results), and scoring saved weights
(pgolf artifacts, checkpoints, the official script's files). Depends on core, data, model, quant."""
