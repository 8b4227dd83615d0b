"""machine.py: figures measured once per machine and kept."""

import json

import numpy as np
import pytest

from charrnn import machine
from charrnn.kernels.sync import spin_wait


def test_spin_wait_stops_at_the_flag_and_at_its_count():
    flag = np.zeros(1, np.int64)
    assert spin_wait(flag, 500) == 500
    flag[0] = 1
    assert spin_wait(flag, 500) == 0


def test_a_spin_takes_a_plausible_time():
    nanoseconds = machine.spin_nanoseconds()
    assert 0.1 < nanoseconds < 10_000


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_a_figure_is_measured_once_then_read(cache):
    calls = []

    def measure():
        calls.append(1)
        return 42.5

    assert machine.measured("thing", measure) == 42.5
    assert machine.measured("thing", measure) == 42.5
    assert len(calls) == 1
    assert json.loads(machine.figures_path().read_text()) == {"thing": 42.5}
    assert machine.figures_path().parent == cache
    assert machine.measured("other", lambda: 7.0) == 7.0  # kept beside the first
    assert json.loads(machine.figures_path().read_text()) == {"thing": 42.5, "other": 7.0}


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"thing": "x"}', '{"thing": -1}'])
def test_an_unreadable_file_means_measuring_again(cache, content):
    machine.figures_path().write_text(content)
    assert machine.measured("thing", lambda: 3.0) == 3.0
    assert json.loads(machine.figures_path().read_text())["thing"] == 3.0


def test_an_unwritable_cache_still_gives_the_figure(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocked / "below"))  # a file in the way
    assert machine.measured("thing", lambda: 5.0) == 5.0
    assert list(tmp_path.iterdir()) == [blocked]


def test_each_cpu_keeps_its_own_figures(cache, monkeypatch):
    here = machine.figures_path()
    monkeypatch.setattr(machine, "cpu_description", lambda: "x86_64 another CPU 6 85 7")
    assert machine.figures_path() != here
    assert machine.figures_path().parent == cache


@pytest.mark.parametrize("nanoseconds, count", [(20.0, 15_000), (24.0, 12_500),
                                                (1e4, 1000), (1e-4, 1_000_000)])
def test_the_team_spins_for_a_time_not_a_count(monkeypatch, nanoseconds, count):
    monkeypatch.setattr(machine, "measured", lambda name, measure: nanoseconds)
    assert machine.team_spin_count() == count
