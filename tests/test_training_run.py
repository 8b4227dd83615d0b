"""training_run.py without click: which checks refuse a run and with which error type, and how a
failure on one rank reaches every rank (a fake two-rank communicator, the failure
pickled as mpi4py would send it). The CLI side of the same paths is in test_cli.py and
test_distributed.py."""

import pickle
from types import SimpleNamespace

import pytest

from charrnn.cli.train import click_error
from charrnn.training_run import (
    AllRanks,
    BadOption,
    RunError,
    RunRequest,
    RunUsageError,
    architecture_conflicts,
    checked_base,
    refuse_to_overwrite,
    settle,
)


class TwoRanks:
    """Rank `rank` of two, whose allgather returns what each rank contributed, pickled."""

    def __init__(self, rank, other):
        self.rank, self.size, self.other = rank, 2, other

    def allgather(self, value):
        mine, theirs = pickle.loads(pickle.dumps(value)), pickle.loads(pickle.dumps(self.other))
        return [mine, theirs] if self.rank == 0 else [theirs, mine]


def request(tmp_path, **changes):
    fields = dict(corpus="c.txt", output=str(tmp_path / "m.ckpt"), resume=False, force=False,
                  init_from=None, max_vocab=None, min_count=1, encoding="utf-8",
                  errors="strict", time_limit=None, flags={}, given=set())
    return RunRequest(**{**fields, **changes})


def test_no_failure_anywhere_settles_quietly():
    settle(TwoRanks(0, None), None)


def test_the_lowest_failing_rank_is_reported_on_every_rank():
    mine, theirs = RunError("mine"), RunUsageError("theirs")
    with pytest.raises(AllRanks) as raised:
        settle(TwoRanks(0, theirs), mine)
    assert (str(raised.value.error), raised.value.rank) == ("mine", None)
    with pytest.raises(AllRanks) as raised:
        settle(TwoRanks(0, theirs), None)  # rank 1 alone failed
    assert raised.value.rank == 1 and raised.value.error.exit_code == 2
    assert str(raised.value.error) == "theirs"


def test_a_bad_option_survives_pickling_with_its_option():
    error = pickle.loads(pickle.dumps(BadOption("--output", "x is a directory")))
    assert (error.option, str(error), error.exit_code) == ("--output", "x is a directory", 2)


def test_click_shows_each_error_type_as_before():
    assert click_error(RunError("no")).exit_code == 1
    usage = click_error(RunUsageError("clash"))
    assert usage.exit_code == 2 and usage.format_message() == "clash"
    bad = click_error(BadOption("--time-limit", "'x' is not a duration"))
    assert bad.format_message() == "Invalid value for --time-limit: 'x' is not a duration"
    other = click_error(BadOption("--output", "d is a directory"), rank=1)
    assert other.exit_code == 2
    assert other.format_message() == "rank 1: Invalid value for --output: d is a directory"


def test_resume_and_init_from_together_is_a_usage_error(tmp_path):
    with pytest.raises(RunUsageError, match="give one of them"):
        checked_base(request(tmp_path, resume=True, init_from="old.ckpt"))


def test_a_new_run_needs_no_checkpoint(tmp_path):
    assert checked_base(request(tmp_path)) is None


@pytest.mark.parametrize("existing, resume, force, says", [
    (None, True, False, "does not exist; drop --resume"),
    (b"not a checkpoint", False, True, "is not a charrnn checkpoint"),
])
def test_refuse_to_overwrite(tmp_path, existing, resume, force, says):
    out = tmp_path / "m.ckpt"
    if existing is not None:
        out.write_bytes(existing)
    with pytest.raises(RunError, match=says) as raised:
        refuse_to_overwrite(str(out), resume, force)
    assert raised.value.exit_code == 1
    with pytest.raises(BadOption, match="is a directory"):
        refuse_to_overwrite(str(tmp_path), False, False)


def test_only_given_options_that_differ_conflict():
    config = SimpleNamespace(cell="lstm", layers=2, hidden=128, embed=64, dropout=0.0)
    flags = dict(cell="gru", layers=2, hidden=256, embed=64, dropout=0.0, max_vocab=None)
    assert architecture_conflicts(config, flags, {"layers", "hidden"}) == ["--hidden"]
    assert architecture_conflicts(config, flags, set()) == []
    assert architecture_conflicts(config, flags, {"cell"}, names=("hidden",)) == []
