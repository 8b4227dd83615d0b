"""Benchmarks: each runs as `python -m charrnn.bench.NAME` (and a `make bench*` target).

speed    training and sampling chars/s against PyTorch (also `charrnn bench`)
corpus   peak memory on big corpora; speed with a large alphabet
quality  validation nats/char at fixed time budgets against PyTorch
mpi      one process with T threads against K ranks with T/K threads
"""
