"""The threads that run parallel.run_parts's parts beside the caller's own: a fixed set
that waits for work as OpenMP's threads do, spinning a while before it sleeps."""

from __future__ import annotations

import threading

import numpy as np

# the threads spin this long for their next part before they sleep
WORKER_SPIN_MICROSECONDS = 300


class Workers:
    """The threads parallel.run_parts hands parts to. Between parts each waits for the
    next one spinning in compiled code, without the GIL, before it sleeps, as OpenMP's
    threads do (WORKER_SPIN_MICROSECONDS); the caller waits for them the same way. On
    a virtual machine a sleeping thread can take a third of a millisecond to wake, a
    tenth of a small model's training step (docs/threads-and-kernels.md, "Threads")."""

    def __init__(self, count: int):
        from .machine import spins_for

        self.count, self.spins = count, spins_for(WORKER_SPIN_MICROSECONDS)
        self.busy = threading.Lock()
        # per worker, column 0 of a row of its own (no two workers' counts share a cache
        # line): parts handed to it, and parts it has finished
        self.posted = np.zeros((count, 8), np.int64)
        self.finished = np.zeros((count, 8), np.int64)
        self.tasks: list = [None] * count
        self.results: list = [None] * count
        self.wake = [threading.Condition() for _ in range(count)]
        self.done = threading.Condition()
        for k in range(count):
            threading.Thread(target=self._serve, args=(k,), name=f"charrnn-{k}",
                             daemon=True).start()

    def run(self, function, arguments: list[tuple]) -> list:
        from .kernels.sync import spin_while

        others = arguments[1:]
        for k, args in enumerate(others):
            self.tasks[k] = (function, args)
            with self.wake[k]:
                self.posted[k, 0] += 1
                self.wake[k].notify()
        try:
            first = function(*arguments[0])
        finally:  # the parts share the caller's buffers: none may still run after this
            for k in range(len(others)):
                target = self.posted[k, 0]
                if not spin_while(self.finished[k], target - 1, self.spins):
                    with self.done:
                        while self.finished[k, 0] < target:
                            self.done.wait()
        results = [first]
        for k in range(len(others)):
            value, error = self.results[k]
            self.results[k] = None
            if error is not None:
                raise error
            results.append(value)
        return results

    def retire(self) -> None:
        """End the threads, idle, their lock held by the caller."""
        for k in range(self.count):
            self.tasks[k] = None
            with self.wake[k]:
                self.posted[k, 0] += 1
                self.wake[k].notify()

    def _serve(self, k: int) -> None:
        from .kernels.sync import spin_while

        seen = 0
        while True:
            if not spin_while(self.posted[k], seen, self.spins):
                with self.wake[k]:
                    while self.posted[k, 0] == seen:
                        self.wake[k].wait()
            seen += 1
            if self.tasks[k] is None:  # retired
                return
            function, args = self.tasks[k]
            self.tasks[k] = None
            try:
                self.results[k] = (function(*args), None)
            except BaseException as error:
                self.results[k] = (None, error)
            with self.done:
                self.finished[k, 0] = seen
                self.done.notify_all()
