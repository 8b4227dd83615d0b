"""What `charrnn sample` loads before its first character (docs/performance.md,
"Start-up"): none of the other commands' modules. Each test runs the console script's
main() in a fresh process and reads its sys.modules at the end; nothing is timed."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

# Runs main(argv) and prints, as the last line of stderr, which of `names` were loaded.
PROBE = """
import json, sys
from charrnn.cli import main
argv, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
try:
    main(argv)
except SystemExit as end:
    assert not end.code, end.code
print(json.dumps([name for name in names if name in sys.modules]), file=sys.stderr)
"""


def loaded_by(argv, names):
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in argv]),
                           json.dumps(names)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def test_sample_loads_no_other_commands_modules(trained):
    others = ["charrnn.cli.train", "charrnn.cli.score", "charrnn.cli.info",
              "charrnn.cli.plot", "charrnn.cli.bench", "charrnn.training_run",
              "charrnn.trainer", "charrnn.optim", "charrnn.corpus", "charrnn.bench",
              "matplotlib", "mpi4py"]
    text, loaded = loaded_by(["sample", trained.ckpt, "-n", "20", "--prime", "The",
                              "--seed", "3", "--threads", "1"], others + ["charrnn.cli.sample"])
    assert text.startswith("The") and len(text) == 23
    assert loaded == ["charrnn.cli.sample"]


def test_cached_kernels_load_without_refreshing_numbas_compiler(trained):
    """The first load of a cached kernel would import every implementation Numba has
    for compiling, numba.typed's and numba.np.polynomial's among them; charrnn's cached
    kernels need none (runtime.load_cached_kernels_directly). Fails, for example, when
    a Numba upgrade renames what that relies on, which silently costs 0.1 s a start."""
    argv = ["sample", trained.ckpt, "-n", "40", "--prime", "The", "--seed", "3",
            "--threads", "1"]
    compiled_text, _ = loaded_by(argv, [])  # compiles what is not yet cached
    registries = ["numba.typed.typeddict", "numba.np.polynomial.polynomial_core"]
    text, loaded = loaded_by(argv, registries)
    assert text == compiled_text and loaded == []
