"""The PyTorch peer of `charrnn bench`, in a process of its own that stays up for a
whole config, so that its training timings alternate with charrnn's.

Its own process: PyTorch's OpenMP pool and Numba's would otherwise spin against each
other, and it gets the thread settings a plain user run has. Alternating: the shared
machine runs in faster and slower phases a few minutes apart, so charrnn timed for five
seconds and then PyTorch for five may each meet a different phase; rounds that take
turns, and the median of each round's ratio, compare the two within the same minute.

The parent writes one request a line to the child's stdin, and the child answers each
with one line of JSON on its stdout:
    train SECONDS            {"rate": chars/s}  (the first one builds the model)
    sample SECONDS onednn|plain   {"rate": chars/s}
The child's first line says which PyTorch it has: {"torch": version}, or
{"torch": "not installed"}, after which it exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile


class TorchPeer:
    """The child process, from the parent's side. hello is its first line; train and
    sample return chars/s, or None once the child has failed (error then says why)."""

    def __init__(self, name: str, threads: int):
        from .speed import torch_env
        self._errors = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "charrnn.bench.speed", "--child", "torch-peer", name,
             str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True,
            env=torch_env())
        self.error = None
        self.hello = self._reply()

    @property
    def measures(self) -> bool:
        return self.error is None and self.hello.get("torch") not in (None, "not installed")

    def train(self, seconds: float) -> float | None:
        return self._ask(f"train {seconds}")

    def sample(self, seconds: float, onednn: bool) -> float | None:
        return self._ask(f"sample {seconds} {'onednn' if onednn else 'plain'}")

    def _ask(self, request: str) -> float | None:
        if not self.measures:
            return None
        try:
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
        except OSError:  # the child has gone: _reply reads why
            pass
        reply = self._reply()
        return reply.get("rate")

    def _reply(self) -> dict:
        line = self._process.stdout.readline()
        reply = json.loads(line) if line.strip() else None
        if reply is None or "error" in reply:
            if reply is None:
                self._process.wait()
                self._errors.seek(0)
                lines = self._errors.read().strip().splitlines()
                reply = {"error": lines[-1] if lines else "failed"}
            self.error = reply["error"]
        return reply

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()  # end of requests: the child exits
            except OSError:
                pass
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._errors.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(name: str, threads: int, requests, reply) -> None:
    """The child's side: answer each request line (see the module's docstring) by
    calling reply(dict)."""
    from . import speed
    try:
        import torch
    except ImportError:
        reply({"torch": "not installed"})
        return
    torch.set_num_threads(threads)
    reply({"torch": torch.__version__})
    layers, hidden, batch, seq = speed.CONFIGS[name]
    step = None
    for request in requests:
        kind, *words = request.split()
        if kind == "train" and len(words) == 1:
            burn_in = 3 if step is None else 1  # a round's first step warms the caches again
            step = step or speed.torch_train_step(layers, hidden, batch, seq)
            elapsed, calls = speed.timed(step, float(words[0]), burn_in)
            reply({"rate": calls * batch * seq / elapsed})
        elif kind == "sample" and len(words) == 2:
            reply({"rate": speed.torch_sample(layers, hidden, float(words[0]),
                                              words[1] == "onednn")})
        else:
            reply({"error": f"unknown request {request.strip()!r}"})
