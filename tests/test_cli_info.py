"""`charrnn info`: the summary and its JSON."""

import json
import math

import pytest
from clitools import (
    run,
)

from charrnn.checkpoint import load_trained


def test_info(trained):
    result = run("info", trained.ckpt)
    assert result.exit_code == 0 and result.stderr == ""
    assert "lstm" in result.stdout and "16 hidden" in result.stdout and "bits/char" in result.stdout
    data = json.loads(run("info", trained.ckpt, "--json").stdout)
    model, vocab, record, _ = load_trained(trained.ckpt)
    assert {"cell", "layers", "hidden", "embed", "vocab_size", "params", "step",
            "val_bpc"} <= set(data)
    assert (data["cell"], data["layers"], data["hidden"], data["embed"]) == ("lstm", 1, 16, 8)
    assert data["vocab_size"] == vocab.size == len(set(trained.text))
    assert data["params"] == model.flat.size
    assert data["step"] == 30
    assert data["val_bpc"] == pytest.approx(record["state"]["best_val_bpc"])
    assert 0 < data["val_bpc"] < math.log2(vocab.size) + 1
