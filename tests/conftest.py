"""Shared test setup: a Numba cache that cannot go stale, and a small deterministic
English-like corpus built in code (no files from outside the repository)."""

import os
import random
import tempfile
from pathlib import Path

import pytest

# Claimed before charrnn is imported: importing it keys the kernel cache
# (charrnn.runtime.key_kernel_cache) unless NUMBA_CACHE_DIR is set. An explicit setting wins.
PLACEHOLDER = "charrnn-test-numba-cache-pending"
os.environ.setdefault("NUMBA_CACHE_DIR", PLACEHOLDER)

from clitools import CONSOLE_SCRIPT, chinese_text, english_text, tiny_model  # noqa: E402

from charrnn.compile_note import SILENCE_VARIABLE  # noqa: E402
from charrnn.runtime import kernel_cache_name  # noqa: E402

KERNELS = Path(__file__).resolve().parent.parent / "charrnn" / "kernels"


def numba_cache_dir() -> Path:
    """A cache directory named after the kernels' source (see
    charrnn.runtime.key_kernel_cache for why), in the temp dir: the suite never shares a
    cache with the checkout's own runs."""
    return Path(tempfile.gettempdir()) / "charrnn-test-numba-cache" / kernel_cache_name(KERNELS)


# Must be final before numba is first imported (numba reads it at import); this conftest
# is loaded before any test module imports numba.
if os.environ["NUMBA_CACHE_DIR"] == PLACEHOLDER:
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())

# No "compiling kernels" note in the tests' stderr (inherited by subprocesses): which test
# compiles a kernel first depends on test order and on the cache, and many compare stderr
# exactly. test_compile_note.py turns it back on.
os.environ.setdefault(SILENCE_VARIABLE, "1")

WORDS = (
    "the of and to in a is that it was for on with as his he be at by had not are but "
    "from or have an they which one you were her all she there would their we him been "
    "has when who will more no if out so said what up its about into than them can only "
    "other new some could time these two may then do first any my now such like our over "
    "man me even most made after also did many before must through back years where much "
    "your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against "
    "go came right used take three river garden window morning letter quiet winter summer"
).split()


def make_text(size: int = 4000, seed: int = 1234) -> str:
    """About `size` characters of sentences and paragraphs: lower and upper case,
    punctuation, digits and newlines, the same for every call with the same seed."""
    rng = random.Random(seed)
    paragraphs, length = [], 0
    while length < size:
        sentences = []
        for _ in range(rng.randint(2, 5)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
            if rng.random() < 0.15:
                words.insert(rng.randrange(len(words)), str(rng.randint(2, 1999)))
            for k in range(1, len(words) - 1):
                if rng.random() < 0.08:
                    words[k] += ","
            sentence = " ".join(words)
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!;"))
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        length += len(paragraph) + 2
    return "\n\n".join(paragraphs) + "\n"


@pytest.fixture(scope="session", autouse=True)
def corpus_cache(tmp_path_factory):
    """Training caches corpus ids; tests keep them out of the user's ~/.cache (the
    variable is inherited by the console-script subprocesses too)."""
    path = tmp_path_factory.mktemp("corpus-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARRNN_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """A few KB of varied English-like text, identical on every run."""
    return make_text()


@pytest.fixture
def tiny_text_file(tmp_path, tiny_text):
    """tiny_text written as UTF-8 to a file in a fresh temporary directory."""
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


# The command-line tests' models (clitools.py): trained once per module that uses them.
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("cli"), english_text(), "m")


@pytest.fixture(scope="module")
def console_script():
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (run `make install`)")
    return str(CONSOLE_SCRIPT)


@pytest.fixture(scope="module")
def chinese(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("zh"), chinese_text(), "zh")
