#!/usr/bin/env python3
"""Build a Chinese corpus from Debian's `manpages-zh` package (Simplified Chinese man pages).

Why: measuring charrnn on a large alphabet needs a few megabytes of real Chinese text from a
reproducible source. `make chinese` builds it once; tests never fetch it.

What: the .deb (`--deb FILE`, else `apt-get download manpages-zh` into a temporary
directory) is an `ar` archive whose `data.tar.*` holds the pages; the standard library reads
both, so neither dpkg nor man need be installed. The regular files under
usr/share/man/zh_CN/ (gzipped roff; symlinked aliases left out), sorted by path, are each
rendered to plain text and joined with a `# ---- <name> ----` line before each, with
build_default_corpus.py's --max-bytes rule and atomic write. The default renderer is the
roff stripper below, so every machine builds the same bytes from the same .deb;
`--render groff` shows the pages as man would instead.

    python3 data/build_chinese_corpus.py [--deb FILE] [--out data/chinese.txt] [--max-bytes N]
"""

import argparse
import gzip
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from build_default_corpus import build_corpus, write_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "chinese.txt"
PAGES_DIR = "usr/share/man/zh_CN/"

# \(xx and \[xx] special characters, \*(xx strings (pod2man's among them); anything not
# listed renders as nothing.
SPECIAL = {"em": "—", "en": "–", "hy": "-", "mi": "-", "bu": "•", "co": "©", "rg": "®",
           "tm": "™", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
           "ga": "`", "ti": "~", "ha": "^", "pl": "+", "mu": "×", "di": "÷", "+-": "±",
           "<=": "≤", ">=": "≥", "!=": "≠", "->": "→", "<-": "←", "de": "°", "sl": "/",
           "rs": "\\", "bv": "|", "ba": "|", "br": "|", "ul": "_", "dg": "†", "pd": "∂",
           "*a": "α", "*b": "β", "*m": "μ", "*p": "π", "*W": "Ω"}
STRINGS = {"C`": '"', "C'": '"', 'L"': "“", 'R"': "”", "lq": "“", "rq": "”", "--": "—",
           "Aq": "'", "C+": "C++", "PI": "π", "TX": "TeX", "R": "®", "Tm": "™"}
ESCAPE = re.compile(r"""\\(".*|\(..|\[[^\]]*\]|\*(?:\(..|\[[^\]]*\]|.)|f(?:\(..|\[[^\]]*\]|.)
    |s[-+]?(?:\(\d\d|\[[^\]]*\]|[1-3]\d|\d)|n[-+]?(?:\(..|\[[^\]]*\]|.)|[hvwoLlDNbxXZRA]'[^']*'
    |[kz].|.)""", re.VERBOSE)
ARG = re.compile(r'"((?:[^"]|"")*)"?|((?:\\.|\S)+)')  # roff macro arguments

DROP = set("""TH so ds nr ft ta ev mk rt ti in ad na ne hy nh PD IX br fi nf RS RE Vb Ve bp tr
    cc c2 rm rr rn ll ps vs ns rs fl lf ss cs ul cu ce hw pl po lt tl ch wh it em ec eo UC DT
    AS CS CE BS BE SO SE VS VE Dd Dt Os Bl El Bd Ed Bk Ek Sm""".split())
BLOCKS = {"de", "de1", "am", "ig"}  # definitions: skipped up to their `..` line
CONDITIONALS = {"if", "ie", "el", "while"}  # formatter set-up: dropped with any \{ ... \}
PARAGRAPH = {"PP", "LP", "P", "Pp", "Lp", "TP", "IP", "HP", "sp", "Sp"}
HEADERS = {"SH", "SS", "Sh", "Ss"}
ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}  # fonts alternate, no space between args
MDOC = set("""Nm Nd Op Oo Oc Ar Fl Cm Ic Li Ql Dq Sq Pq Qq Aq Bq Em Sy Va Ev Ns Xr Pa Fn Fa Ft
    Cd Dv Er Ad An Ms No Tn Ux Bx At Pf Xo Xc Ta It Dl D1""".split())


def _unescape_one(match):
    esc = match.group(1)
    kind = esc[0]
    if kind == '"':
        return ""
    if kind in "([":
        return SPECIAL.get(esc[1:3] if kind == "(" else esc[1:-1], "")
    if kind == "*":
        name = esc[2:] if esc[1] == "(" else esc[2:-1] if esc[1] == "[" else esc[1]
        return STRINGS.get(name, "")
    if kind == "z" and len(esc) == 2:
        return esc[1]
    if len(esc) > 1 or kind in "&,/|^%c{}:)":
        return ""  # fonts, sizes, registers, motions, zero-width marks
    return {"e": "\\", "0": " ", "~": " "}.get(kind, kind)  # \- \\ \. \' and others: the char


def unescape(text):
    """Replace roff escapes in text by the characters they print (comments: nothing)."""
    return ESCAPE.sub(_unescape_one, text)


def strip_comment(line):
    return ESCAPE.sub(lambda m: "" if m.group(1)[0] == '"' else m.group(0), line)


def macro_text(name, rest):
    """The text a macro line prints: its arguments, joined the way the macro joins them."""
    args = [m[2] if m[1] is None else m[1].replace('""', '"') for m in ARG.finditer(rest)]
    if name in ALTERNATING:
        return "".join(args)
    if name not in MDOC:
        return " ".join(args[:1] if name == "IP" else args)
    words, dash = [], ""
    for word in [name] + args:  # mdoc: drop the macro names, Fl puts a dash on its word
        if word == "Fl":
            dash = "-"
        elif word not in MDOC:
            words.append(dash + word)
            dash = ""
    return " ".join(words + ([dash] if dash else []))


def roff_to_text(source):
    """Best-effort plain text of a man(7), mdoc(7) or pod2man page's roff source.

    Comments, definitions, conditionals and layout requests are dropped; headers and macro
    arguments kept as lines; escapes turned into what they print. Source lines are not
    refilled. The aim is readable Chinese+ASCII text, not man's layout.
    """
    out = []
    in_block, table, tab = False, None, "\t"  # table: None, "format" or "data"
    depth = 0  # open \{ of a dropped conditional
    for line in re.sub(r"(?<!\\)\\\n", "", source).splitlines():  # join \-newline lines
        if in_block:
            in_block = line.rstrip() != ".."
            continue
        if depth > 0:
            depth += line.count("\\{") - line.count("\\}")
            continue
        if table == "format":  # tbl options and format lines: up to the one ending in "."
            tab = (re.findall(r"tab\s*\((.)\)", line) or [tab])[0]
            table = "data" if line.rstrip().endswith(".") else "format"
            continue
        text = strip_comment(line)
        if table and text[:1] not in (".", "'"):  # a table row: cells apart, T{ T} dropped
            text = re.sub(r"T[{}]", "", text.replace(tab, "  "))
        if line and not text.strip():
            continue  # a comment line, or a table's T} line
        if text[:1] not in (".", "'"):
            out.append(unescape(text).rstrip())
            continue
        match = re.match(r"[.']\s*([^\s\\]+)\s*(.*)", text)
        name, rest = match.groups() if match else ("", "")
        if name in BLOCKS:
            in_block = True
        elif name in CONDITIONALS:
            depth = text.count("\\{") - text.count("\\}")
        elif name in ("TS", "T&"):
            table = "format"
        elif name == "TE":
            table = None
        elif name in HEADERS:
            out += ["", unescape(macro_text(name, rest))]
        elif name not in DROP:
            if name in PARAGRAPH:
                out.append("")
            if name not in PARAGRAPH or name == "IP":
                out.append(unescape(macro_text(name, rest)).strip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out).strip("\n"))
    return text + "\n" if text else ""


def groff_to_text(raw):
    """The page as groff renders it for a UTF-8 terminal, without bold/underline overstrikes."""
    cmd = ["groff", "-Kutf8", "-mandoc", "-Tutf8", "-P-c", "-P-b", "-P-u"]
    rendered = subprocess.run(cmd, input=raw, capture_output=True, check=True).stdout
    return re.sub(r"\n{3,}", "\n\n", rendered.decode("utf-8", "replace").strip("\n")) + "\n"


def download_deb():
    """The bytes of manpages-zh's .deb, fetched by `apt-get download` into a temporary dir."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", "-q", "manpages-zh"], cwd=tmp,
                           capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            why = (getattr(err, "stderr", "") or str(err)).strip().splitlines() or [str(err)]
            raise RuntimeError(f"could not download manpages-zh with apt-get: {why[-1]}; "
                               "give --deb FILE") from None
        (deb,) = Path(tmp).glob("*.deb")
        return deb.read_bytes()


def ar_members(data):
    """{name: bytes} of an ar archive (the container format of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise RuntimeError("not a .deb (no ar header); give --deb a Debian package file")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        name = data[pos:pos + 16].decode("ascii").strip().rstrip("/")
        size = int(data[pos + 48:pos + 58])
        members[name] = data[pos + 60:pos + 60 + size]
        if len(members[name]) < size:
            raise RuntimeError(f"the .deb is truncated (in its member {name})")
        pos += 60 + size + size % 2  # members start on even offsets
    return members


def open_tar(members, stem):
    """The tarfile of the .deb member stem.tar.{xz,gz,bz2,...} (zstd is not in the stdlib)."""
    name = next((n for n in members if n.startswith(stem + ".tar")), None)
    if name is None or name.endswith(".zst"):
        raise RuntimeError(f"this .deb has {name or f'no {stem}.tar'}; need xz, gz or bz2")
    return tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*")


def deb_pages(deb_bytes):
    """(package version, [(page name, roff bytes)]) of the zh_CN pages, sorted by path."""
    members = ar_members(deb_bytes)
    with open_tar(members, "control") as tar:
        control = tar.extractfile("./control").read().decode("utf-8")
    version = re.search(r"^Version:\s*(\S+)", control, re.M).group(1)
    pages = []
    with open_tar(members, "data") as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if member.isfile() and path.startswith(PAGES_DIR) and path.endswith(".gz"):
                raw = gzip.decompress(tar.extractfile(member).read())
                pages.append((path, Path(path).name.removesuffix(".gz"), raw))
    return version, [(name, raw) for _, name, raw in sorted(pages)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path,
                        help="use this manpages-zh .deb instead of running apt-get download")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where to write the corpus (default: %(default)s)")
    parser.add_argument("--max-bytes", type=int,
                        help="size limit in UTF-8 bytes (default: no limit)")
    parser.add_argument("--render", choices=["python", "groff"], default="python",
                        help="roff to text: this file's stripper (default, the same on "
                             "every machine) or groff (if installed)")
    args = parser.parse_args(argv)
    if args.max_bytes is not None and args.max_bytes <= 0:
        parser.error(f"--max-bytes must be positive, got {args.max_bytes}")
    if args.render == "groff" and not shutil.which("groff"):
        parser.error("--render groff needs groff (apt-get install groff); or use --render python")

    try:
        version, pages = deb_pages(args.deb.read_bytes() if args.deb else download_deb())
        render = groff_to_text if args.render == "groff" else (
            lambda raw: roff_to_text(raw.decode("utf-8", "replace")))
        texts = ((name, render(raw)) for name, raw in pages)
        corpus, n_pages = build_corpus(((name, text) for name, text in texts if text),
                                       args.max_bytes or float("inf"))
    except (OSError, EOFError, ValueError, RuntimeError, tarfile.TarError,
            subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not corpus:
        print(f"error: no {PAGES_DIR} pages in manpages-zh {version}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, corpus)
    text = corpus.decode("utf-8")
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in text)
    print(f"wrote {args.out}: {n_pages} pages of manpages-zh {version}, {len(corpus):,} bytes, "
          f"{len(text):,} chars ({cjk / len(text):.0%} ideographs), {len(set(text)):,} distinct",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
