"""A training run as `charrnn train` (and charrnn.train) asks for it: new, resumed exactly
(the checks are resume.py's), or fine-tuned from another checkpoint, on one process or on
every rank of an MPI job (distributed.py).

Plain functions of plain values (RunRequest): nothing here knows click, stdout or exit
codes. A run that cannot start says why in a RunError (the CLI exits 1) or, when the
options contradict each other or the checkpoint they name, a RunUsageError (exit 2).

Rank 0 alone checks the output and reads checkpoints; every rank reads the corpus (rank
0's stdin is broadcast) and trains its share of the streams. A collective waits for
every rank, so a failure every rank knows of is raised on all of them together
(AllRanks, rank 0 reports it); a failure one rank meets alone must end the job through
comm.abort, which the CLI does.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from . import defaults

ARCHITECTURE = ("cell", "layers", "hidden", "embed", "softmax", "dropout")

# The train command's defaults, for the command line and the Python API alike: the
# architecture, then train.TrainOptions' fields. None: chosen for the run (defaults.py).
TRAIN_DEFAULTS = {
    "cell": "lstm", "layers": 2, "hidden": None, "embed": 64, "softmax": "auto",
    "dropout": None,
    "seq_len": 64, "batch_size": 32, "lr": None, "lr_schedule": "auto", "warmup": 50,
    "clip": 5.0, "steps": None, "eval_every": 200, "save_every": 500,
    "val_fraction": None, "val_chars": 0, "patience": 0, "seed": 0,
}


# What a value of each option must be beyond its type (the train command's ranges), for
# callers that do not go through click: the Python API.
CHOICES = {"cell": ("lstm", "gru", "rnn"), "lr_schedule": ("auto", "constant", "cosine", "step"),
           "softmax": defaults.SOFTMAXES}
RANGES = {"layers": (1, 16), "hidden": (1, 8192), "embed": (0, 4096), "dropout": (0, 1),
          "seq_len": (1, None), "batch_size": (1, None), "lr": (0, None), "warmup": (0, None),
          "clip": (0, None), "steps": (1, None), "eval_every": (0, None),
          "save_every": (0, None), "val_fraction": (0, 0.9), "val_chars": (0, None),
          "patience": (0, None), "seed": (0, None)}
WHOLE = {"layers", "hidden", "embed", "seq_len", "batch_size", "warmup", "steps",
         "eval_every", "save_every", "val_chars", "patience", "seed"}


def check_flags(flags: dict) -> None:
    """Raise BadOption for a value outside what the train command accepts (None means
    the default, chosen for the run)."""
    for name, value in flags.items():
        option = "--" + name.replace("_", "-")
        if value is None or name not in RANGES and name not in CHOICES:
            continue
        if name in CHOICES:
            if value not in CHOICES[name]:
                raise BadOption(option, f"{option} {value!r} is not one of "
                                        f"{', '.join(CHOICES[name])}")
            continue
        low, high = RANGES[name]
        whole = isinstance(value, int) and not isinstance(value, bool)
        if name in WHOLE and not whole or not (whole or isinstance(value, float)):
            kind = "a whole number" if name in WHOLE else "a number"
            raise BadOption(option, f"{option} {value!r} is not {kind}")
        if not value == value or value in (float("inf"), float("-inf")) or value < low or \
                (high is not None and value > high) or \
                (name in ("lr", "dropout") and value == (0 if name == "lr" else 1)):
            raise BadOption(option, f"{option} {value!r} is out of range")


class RunError(Exception):
    """A run that cannot start or go on; the message says how to fix it."""
    exit_code = 1


class RunUsageError(RunError):
    """Options that contradict each other or the checkpoint they name."""
    exit_code = 2


class BadOption(RunUsageError):
    """One option's value is wrong whatever the others say."""

    def __init__(self, option: str, message: str):
        super().__init__(option, message)  # both in args, so it pickles (see settle)
        self.option, self.message = option, message

    def __str__(self) -> str:
        return self.message


class AllRanks(Exception):
    """A failure every rank knows of, so all of them can end together (rank 0 reports
    it). Under MPI, a failure on some ranks alone must end the job through abort."""

    def __init__(self, error: RunError, rank: int | None = None):
        super().__init__(str(error))
        self.error = error
        self.rank = rank  # the rank it happened on, when that is another one


def settle(comm, failure: RunError | None) -> None:
    """Collective: if any rank failed, raise AllRanks on every rank with the failure of
    the lowest such rank."""
    for rank, found in enumerate(comm.allgather(failure)):
        if found is not None:
            raise AllRanks(found, None if rank == comm.rank else rank)


@dataclass
class RunRequest:
    """What the train command was asked for."""
    corpus: str  # a path, or '-' for stdin
    output: str  # the checkpoint to write (and OUT.best)
    resume: bool  # continue output exactly where it stopped
    force: bool  # replace an existing output
    init_from: str | None  # fine-tune from this checkpoint
    max_vocab: int | None  # keep only this many most frequent characters; None = all
    min_count: int | None  # characters seen fewer times become the unknown symbol;
    # None: defaults.default_min_count
    encoding: str  # of the corpus
    errors: str  # what to do with undecodable bytes: strict | replace | ignore
    time_limit: float | None  # seconds
    flags: dict  # ARCHITECTURE and TrainOptions values by name, defaults included
    given: set  # names of flags, max_vocab and min_count set by the user, not defaulted
    log: str | None = None  # --log: appended to once per evaluation


def parse_duration(value) -> float | None:
    """'90', '90s', '10m', '2h', '1.5h' (or a number of seconds) -> seconds; None stays
    None. Raises ValueError."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration like 90, 90s, 10m or 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def default_output(corpus: str) -> str:
    """Where a run writes its checkpoint when not told: the corpus's name with .ckpt
    in the current directory (corpus.txt -> corpus.ckpt; stdin -> stdin.ckpt)."""
    name = "stdin" if corpus == "-" else \
        os.path.splitext(os.path.basename(os.path.normpath(corpus)))[0]
    return (name or "corpus") + ".ckpt"


def prepare_run(comm, request: RunRequest, stdin):
    """Collective: (trainer, notes) for this rank, comm a distributed.LocalComm for one
    process. notes are (line, shown even when quiet) for rank 0 to print once nothing can
    fail. stdin: the binary standard input when the corpus is '-' (else None); with
    several ranks, rank 0's is broadcast to the others."""
    from .distributed import BroadcastReader, bcast_checkpoint

    failure, base = None, None
    if comm.rank == 0:
        try:
            base = checked_base(request)
        except RunError as error:
            failure = error
    settle(comm, failure)
    base = bcast_checkpoint(comm, base)
    notes = []
    reader = BroadcastReader(comm, stdin) if request.corpus == "-" and comm.size > 1 \
        else None
    failure, trainer, key = None, None, None
    try:
        trainer, key = start_trainer(comm, request, base, reader, notes)
    except RunError as error:
        if reader is not None and not reader.finished:
            raise  # rank 0 is still broadcasting stdin: only an abort ends it
        failure = error
    settle(comm, failure)
    keys = comm.allgather(key)
    if any(other != keys[0] for other in keys):
        rank = next(r for r, other in enumerate(keys) if other != keys[0])
        raise AllRanks(RunError(
            f"rank {rank} read other bytes from {request.corpus} than rank 0: every machine "
            "needs the same corpus file (or give '-' to send rank 0's stdin to all ranks)"))
    return trainer, notes


def start_trainer(comm, request: RunRequest, base, stdin, notes: list):
    """(trainer, key of the corpus read) for a run from base (a loaded checkpoint, or
    None): read the corpus, choose its vocabulary, and start or continue the model."""
    from .batches import split_ids
    from .corpus import Corpus
    from .textfile import CorpusError
    from .trainer import Trainer

    clock = time.perf_counter()
    vocab_given = request.given & {"max_vocab", "min_count"}
    try:
        with Corpus(request.corpus, request.encoding, request.errors, stdin=stdin) as text:
            key = text.key
            vocab = corpus_vocab(text, request.max_vocab, request.min_count, notes) \
                if not request.resume or vocab_given else None
            if request.resume:
                from .resume import resumed_run
                model, vocab, options, state, arrays = resumed_run(base, request, text, vocab)
            else:
                model, options = new_run(base, request, text, vocab, notes)
                state, arrays = None, None
            ids = text.ids(vocab)
            notes.insert(0, (f"corpus {text.name}: {text.n_chars:,} chars, "
                             f"{len(text.counts):,} distinct; ids "
                             f"{'reused from' if text.ids_cached else 'cached in'} "
                             f"{text.ids_path(vocab)} ({time.perf_counter() - clock:.1f} s)",
                             False))
    except CorpusError as error:
        raise RunError(str(error)) from None
    if options.batch_size < comm.size:
        raise RunUsageError(f"--batch-size {options.batch_size} is smaller than the "
                            f"{comm.size} ranks: each rank needs at least one stream; "
                            "raise --batch-size or start fewer ranks")
    train_ids, val_ids = split_ids(ids, options.val_fraction)
    cap = defaults.SCORED_VAL_CHARS_CAP
    if not request.resume and "val_chars" not in request.given and len(val_ids) > cap:
        # A whole held-out tenth of a big corpus would take longer to score than the
        # training between two evaluations; the same first chars are used every time.
        options.val_chars = cap
        notes.append((f"validating on the first {cap:,} of {len(val_ids):,} held-out "
                      "chars; --val-chars 0 for all", False))
    try:
        trainer = Trainer(model, vocab, train_ids, val_ids, options, request.output, state,
                          arrays, comm)
    except CorpusError as error:
        raise RunError(str(error)) from None
    return trainer, key


def run_training(trainer, report, stop, output: str) -> str:
    """trainer.run(report, stop), its failures as run errors: why it stopped."""
    from .trainer import ReplicasDiffer, TrainingDiverged
    try:
        return trainer.run(report, stop)
    except (TrainingDiverged, ReplicasDiffer) as error:  # raised on every rank at once
        raise AllRanks(RunError(str(error))) from None
    except OSError as error:  # save_checkpoint names the checkpoint: output or OUT.best
        raise RunError(f"cannot write {error.filename or output}: "
                       f"{error.strerror or error}") from None


def checked_base(request: RunRequest):
    """The checkpoint a run starts from (--resume: output; --init-from), or None, once
    writing output is known to be safe. Rank 0 alone: it writes the checkpoints."""
    from .checkpoint import CheckpointError, load_trained
    if request.resume and request.init_from:
        raise RunUsageError("--resume continues --output itself and --init-from starts a "
                            "new run from another checkpoint: give one of them")
    refuse_to_overwrite(request.output, request.resume, request.force)
    if request.log:
        check_log(request)
    # A bad checkpoint fails before a big corpus is read.
    path = request.output if request.resume else request.init_from
    if path is None:
        return None
    try:
        base = load_trained(path)
    except CheckpointError as error:
        raise RunError(str(error)) from None
    if request.resume:
        from .resume import resumable_training
        resumable_training(base, path)  # the same check resumed_run makes, before the corpus
    return base


def refuse_to_overwrite(output: str, resume: bool, force: bool) -> None:
    """Fail unless writing output (and OUT.best) can destroy nothing but a checkpoint
    the user asked to replace or continue."""
    from .checkpoint import is_checkpoint_file
    from .trainer import best_path
    if os.path.isdir(output):
        raise BadOption("--output", f"{output} is a directory")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise RunError(f"{output}: no such directory {directory}: create it, or choose "
                       "another --output")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise RunError(f"{output}: cannot create files in {directory}: choose another "
                       "--output")
    exists = os.path.exists(output)
    for path in (output, best_path(output)):
        if os.path.exists(path) and not is_checkpoint_file(path):
            raise RunError(f"{path} exists and is not a charrnn checkpoint: refusing to "
                           "overwrite it; choose another --output")
    if resume and not exists:
        raise RunError(f"--resume: {output} does not exist; drop --resume to start a new "
                       "model")
    if exists and not resume and not force:
        raise RunError(f"{output} already exists: add --resume to continue it or --force to "
                       "replace it")


def check_log(request: RunRequest) -> None:
    """The log is appended to: it must not be a file the run reads or writes otherwise
    (JSON appended to a checkpoint would corrupt it), and its directory must exist."""
    from .checkpoint import is_checkpoint_file
    from .trainer import best_path
    log = request.log
    others = {"the --output checkpoint": request.output,
              "--output's best checkpoint": best_path(request.output),
              "the --init-from checkpoint": request.init_from, "the corpus": request.corpus}
    for role, path in others.items():
        if path and path != "-" and os.path.realpath(path) == os.path.realpath(log):
            raise BadOption("--log", f"{log} is {role}: give the log a file of its own")
    if os.path.isdir(log):
        raise BadOption("--log", f"{log} is a directory")
    if os.path.exists(log) and is_checkpoint_file(log):
        raise RunError(f"--log {log} is a charrnn checkpoint: appending the log would "
                       "corrupt it; choose another --log")
    directory = os.path.dirname(os.path.abspath(log))
    if not os.path.isdir(directory):
        raise RunError(f"--log {log}: no such directory {directory}")


def corpus_vocab(text, max_vocab: int | None, min_count: int | None, notes: list):
    """The vocabulary of a corpus, rare characters folded into the unknown symbol."""
    from .vocab import Vocab
    if min_count is None:
        min_count = defaults.default_min_count(text.counts, text.n_chars)
    vocab = Vocab.from_counter(text.counts, max_vocab or 0, min_count)
    if not vocab.chars:
        raise RunError(f"--min-count {min_count} keeps no character (the most frequent "
                       f"occurs {max(text.counts.values()):,} times): lower --min-count")
    if vocab.has_unknown:
        folded = len(text.counts) - len(vocab.chars)
        share = 1 - sum(vocab.counts) / text.n_chars
        notes.append((f"vocabulary: {len(vocab.chars):,} of {len(text.counts):,} characters; "
                      f"the other {folded:,} ({share:.2%} of the text) are one unknown "
                      "symbol", False))
    return vocab


def architecture_conflicts(config, flags, given, names=ARCHITECTURE) -> list[str]:
    """The options given that disagree with config, as they are spelled on the command
    line."""
    return [f"--{name.replace('_', '-')}" for name in names
            if name in given and flags[name] != getattr(config, name)
            and not (name == "softmax" and flags[name] == "auto")]


def new_run(base, request: RunRequest, text, vocab, notes: list):
    """(model, options) for a run from step 0: freshly initialised, or fine-tuned from
    base (a loaded checkpoint) with rows matched by character."""
    import numpy as np

    from . import adaptive
    from .model import Model, ModelConfig
    from .trainer import TrainOptions
    flags, given, time_limit = request.flags, request.given, request.time_limit
    options = TrainOptions(**{k: v for k, v in flags.items() if k not in ARCHITECTURE},
                           time_limit=time_limit)
    if options.steps is None and time_limit is None:
        options.steps = 2000
    if options.val_fraction is None:
        options.val_fraction = defaults.default_val_fraction(text.n_chars)
    architecture = {k: flags[k] for k in ARCHITECTURE}
    if architecture["hidden"] is None:
        architecture["hidden"] = defaults.default_hidden(time_limit, text.n_chars)
    if architecture["dropout"] is None:
        architecture["dropout"] = defaults.default_dropout(time_limit, text.n_chars)
    softmax = architecture.pop("softmax")
    if base is not None:
        old_model, old_vocab = base[0], base[1]
        # dropout is a training choice, and the output layer follows the new vocabulary:
        # both may change
        shape_names = ("cell", "layers", "hidden", "embed")
        conflicts = architecture_conflicts(old_model.config, flags, given, shape_names)
        if conflicts:
            raise RunUsageError(f"{', '.join(conflicts)} conflict with the architecture "
                                f"of {request.init_from}; drop them when fine-tuning")
        architecture.update({k: getattr(old_model.config, k) for k in shape_names})
        if "dropout" not in given:
            architecture["dropout"] = old_model.config.dropout
    if options.lr is None:
        options.lr = defaults.default_lr(options.lr_schedule, time_limit,
                                         architecture["hidden"])
    counts = text.id_counts(vocab)
    if adaptive.uses_adaptive(softmax, vocab.size):
        try:
            layout = adaptive.choose_layout(counts, vocab.unknown_id, architecture["hidden"])
        except ValueError as error:
            raise BadOption("--softmax", f"--softmax adaptive: {error}") from None
        architecture.update(layout)
        notes.append((adaptive.describe(layout, counts), False))
    model = Model(ModelConfig(vocab_size=vocab.size, **architecture))
    model.initialise(np.random.default_rng(options.seed), counts)
    if base is not None:
        from .finetune import transfer_by_character
        added = transfer_by_character(old_model, old_vocab, model, vocab)
        dropped = len(set(old_vocab.chars) - set(vocab.chars))
        shown = "".join(added[:200]) + ("..." if len(added) > 200 else "")
        notes.append((f"fine-tuning {request.init_from}: " + (
            f"{len(added)} characters it never saw get fresh rows: {shown!r}" if added else
            "it knows every character of the corpus") +
            (f"; {dropped} of its characters are not in the corpus and are dropped"
             if dropped else ""),
            True))
    return model, options
