"""Weights out: state dict -> codes -> streams -> one file, and back. Quantizers (official int8,
per-row intN with clip rules, GPTQ with Hessians from training batches, LQER) turn a state dict
into codes; transforms and codecs turn codes into compressed streams; the container writes and
verifies the file; the planner predicts and tabulates where the bytes go. Works on state dicts
and a name -> quantization-group map handed in by the caller: it never imports the model.
Depends on core and data (calibration batches come from the training stream)."""
