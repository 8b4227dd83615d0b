"""`charrnn` with a fault injected on one rank, for the MPI tests: run as
`python tests/faulty_charrnn.py RANK:STEP[:kill] train ...`. At its STEP-th training
step, rank RANK raises RuntimeError (or kills itself with SIGKILL), so the tests see
what a job does when one rank fails alone. Kept out of charrnn: production code has no
hooks for tests."""

import os
import signal
import sys

from charrnn.cli import main
from charrnn.distributed import communicator
from charrnn.trainer import Trainer


def inject(spec: str) -> None:
    rank, step, *how = spec.split(":")
    if communicator().rank != int(rank):
        return
    original = Trainer.train_step

    def train_step(self):
        if self.state.step == int(step):
            if how == ["kill"]:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"fault injected at step {step}")
        return original(self)
    Trainer.train_step = train_step


if __name__ == "__main__":
    inject(sys.argv[1])
    main(sys.argv[2:])
