#!/usr/bin/env python3
"""Build the default training corpus from the running Python's standard library source.

Why: `make demo` and the tests need a few megabytes of real, structured text that is
always there — no network, no third-party text in the repository. Every Python
installation carries its standard library as `.py` source, so we use that.

What: the `.py` files directly in `sysconfig.get_paths()["stdlib"]` (top level only:
no subpackages, no site-packages), sorted by file name, each decoded as UTF-8 (files
that fail are skipped), joined with a separator line `# ---- <name> ----`. Files are
added whole until the next one would pass `--max-bytes`; that last file contributes
whole lines up to the limit, so the output is at most `--max-bytes` UTF-8 bytes and
usually within a line of it. The generated `_sysconfigdata*` build-flag dumps are left
out: they are configuration, not source.

The result is deterministic for a given Python installation. The output is written
atomically (temporary file + os.replace). Standard library only; run it as a script:

    python3 data/build_default_corpus.py [--out data/default.txt] [--max-bytes 3000000]
"""

import argparse
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "default.txt"
DEFAULT_MAX_BYTES = 3_000_000


def write_atomic(path, data):
    """Write bytes to path so readers see the old file or the whole new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give a normal file's mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def stdlib_sources(stdlib_dir):
    """Yield (name, text) for the top-level .py files of stdlib_dir, sorted by name."""
    names = sorted(
        entry.name
        for entry in os.scandir(stdlib_dir)
        if entry.name.endswith(".py")
        and not entry.name.startswith("_sysconfigdata")
        and entry.is_file()
    )
    for name in names:
        try:
            text = (Path(stdlib_dir) / name).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield name, text


def build_corpus(sources, max_bytes):
    """Join (name, text) pairs under separator lines, at most max_bytes bytes.

    Returns (corpus_bytes, number_of_files_used).
    """
    parts = []
    total = 0
    n_files = 0
    for name, text in sources:
        if not text.endswith("\n"):
            text += "\n"
        lines = [f"# ---- {name} ----\n"] + text.splitlines(keepends=True)
        whole = "".join(lines).encode("utf-8")
        if total + len(whole) <= max_bytes:
            parts.append(whole)
            total += len(whole)
            n_files += 1
            continue
        # The file that crosses the limit: keep whole lines that still fit, then stop.
        kept = 0
        for line in lines:
            encoded = line.encode("utf-8")
            if total + len(encoded) > max_bytes:
                break
            parts.append(encoded)
            total += len(encoded)
            kept += 1
        if kept > 1:  # more than the separator line made it in
            n_files += 1
        break
    return b"".join(parts), n_files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where to write the corpus (default: %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help="size limit in UTF-8 bytes (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.max_bytes <= 0:
        parser.error(f"--max-bytes must be positive, got {args.max_bytes}")

    stdlib_dir = sysconfig.get_paths()["stdlib"]
    corpus, n_files = build_corpus(stdlib_sources(stdlib_dir), args.max_bytes)
    if not corpus:
        print(f"error: no readable .py files found in {stdlib_dir}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, corpus)
    print(f"wrote {args.out}: {len(corpus):,} bytes from {n_files} files in {stdlib_dir}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
