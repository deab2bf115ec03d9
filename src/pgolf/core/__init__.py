"""The vocabulary every stage shares, and nothing else: the typed run configuration and its named
presets, the challenge's constants (size cap, BOS id), pgolf's exception types, parameter roles
(how each parameter is optimized and quantized, declared where it is created), the process
runtime (device, torchrun/process group, autocast) and the run log. It imports no other pgolf
subpackage, so every layer above can use it."""
