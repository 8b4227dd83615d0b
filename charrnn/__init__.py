"""charrnn: character-level recurrent networks (RNN, GRU, LSTM) on the CPU, compiled by
Numba. The public API (docs/python-api.md):

    import charrnn
    model = charrnn.load("corpus.ckpt")
    print(model.generate(300, prime="ROMEO:", temperature=0.8, seed=7))

Importing is cheap (numpy and numba load when a model does) and sets up what a library
user needs: one BLAS thread per call and a kernel cache keyed by the kernels' source
(runtime.setup_library). It leaves the host program's allocator and signals alone.
"""

__version__ = "0.1.0"
__all__ = ["load", "train", "TrainedModel", "__version__"]

from .runtime import setup_library as _setup_library

_setup_library()


def load(path):
    """The trained model in a checkpoint, as a TrainedModel (raises
    charrnn.checkpoint.CheckpointError, one line, for a file it cannot load)."""
    from .api import load
    return load(path)


def train(corpus, output=None, progress=None, **options):
    """Train as `charrnn train` does, with its defaults; returns the TrainedModel saved
    at output (default: the corpus's name with .ckpt, in the current directory). See
    charrnn.api.train."""
    from .api import train
    return train(corpus, output, progress, **options)


def __getattr__(name):
    if name == "TrainedModel":
        from .api import TrainedModel
        return TrainedModel
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
