"""Training: Muon + Adam optimizers built from the parameter roles, LR / momentum schedules with
the official wall-clock semantics, the session (set-up, undone warm-up, step loop, EMA,
validation) and resumable checkpoints. Depends on core, data, model, eval."""
