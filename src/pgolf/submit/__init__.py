"""From a trained model to what the rules count: finalization (calibrate, quantize, pack, size
check, reload and roundtrip score), the dry-run report, the ast bundler that exports the package
as one train_gpt.py, that script's entry point, and the record folder. Depends on every layer
below it."""
