"""Measurements: the matmul peak, training throughput and MFU, and the CPU proxy track that
compares whole recipes at equal wall-clock in fresh subprocesses. Depends on the layers below."""
