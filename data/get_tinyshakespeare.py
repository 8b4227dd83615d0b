#!/usr/bin/env python3
"""Fetch tiny shakespeare (Karpathy's char-rnn corpus, ~1.1 MB) into data/.

For users who are online and want the classic char-rnn benchmark text. If a shared copy
exists at `../shared/data/tinyshakespeare.txt` relative to the repository root, it is
copied instead of downloaded. The text is not committed to this repository; the output
is git-ignored and written atomically. Standard library only:

    python3 data/get_tinyshakespeare.py [--out data/tinyshakespeare.txt]
"""

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

from build_default_corpus import write_atomic  # same directory: sys.path[0]

URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/"
       "data/tinyshakespeare/input.txt")
DATA_DIR = Path(__file__).resolve().parent
SHARED_COPY = DATA_DIR.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
TIMEOUT_S = 60


def fetch(url, timeout):
    """Return the body at url; raise OSError (URLError is one) on failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "tinyshakespeare.txt",
                        help="where to write the text (default: %(default)s)")
    args = parser.parse_args(argv)

    if SHARED_COPY.is_file():
        source = str(SHARED_COPY)
        data = SHARED_COPY.read_bytes()
    else:
        source = URL
        try:
            data = fetch(URL, TIMEOUT_S)
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"error: could not download {URL}: {reason} "
                  "(check your connection, or use `make corpus` for the offline corpus)",
                  file=sys.stderr)
            return 1
    if not data:
        print(f"error: {source} is empty", file=sys.stderr)
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, data)
    print(f"wrote {args.out}: {len(data):,} bytes from {source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
