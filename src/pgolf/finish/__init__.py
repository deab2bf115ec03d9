"""The second half of a run: from trained weights to the scored artifact. GPTQ calibration on
training data, quantization (spread over the ranks), packing into the verified container, cap
fitting, the roundtrip reload and its scores (official, sliding, document evaluation), and
summary.json. Sits between train (which it follows) and submit (export and record paperwork)."""
