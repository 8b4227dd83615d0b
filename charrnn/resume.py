"""Resuming a checkpoint exactly: the options and counters it stores, checked for type
and range, and the arrays that carry the run (Adam's moments, each stream's state)
checked against the model and batch, before a corpus is read. A checkpoint that cannot
continue the run it saved is refused in one line (RunError), never half-resumed.
"""

from __future__ import annotations

from dataclasses import fields, replace

from .training_run import RunError, RunRequest, RunUsageError, architecture_conflicts


def resumed_run(base, request: RunRequest, text, vocab):
    """(model, vocab, options, state, arrays) to continue the checkpoint base exactly.
    vocab is the corpus's under the --max-vocab/--min-count given, if any: it must be the
    stored one."""
    from .trainer import TrainOptions
    flags, given, output = request.flags, request.given, request.output
    model, stored_vocab, _, arrays = base
    conflicts = architecture_conflicts(model.config, flags, given)
    if vocab is not None and (vocab.chars, vocab.has_unknown) != \
            (stored_vocab.chars, stored_vocab.has_unknown):
        conflicts += [f"--{name.replace('_', '-')}"
                      for name in sorted(given & {"max_vocab", "min_count"})]
    if conflicts:
        raise RunUsageError(f"{', '.join(conflicts)} conflict with the architecture or "
                            f"vocabulary stored in {output}; drop them when resuming")
    stored, state = resumable_training(base, output)
    if "batch_size" in given and flags["batch_size"] != stored.batch_size:
        # The data cursor and the carried state belong to the stored streams.
        raise RunUsageError(f"--batch-size {flags['batch_size']} differs from the "
                            f"{stored.batch_size} streams stored in {output}: drop it "
                            "to resume them (any number of ranks shares the same streams)")
    changes = {field.name: flags[field.name] for field in fields(TrainOptions)
               if field.name in given}
    changes["time_limit"] = request.time_limit
    if "steps" in given or request.time_limit is not None:
        changes["steps"] = flags["steps"]
    missing = text.missing(stored_vocab)
    if missing and not stored_vocab.has_unknown:
        raise RunError(f"the corpus has characters the checkpoint's vocabulary lacks "
                       f"({''.join(missing[:20])!r}); resume on the same corpus, or "
                       f"fine-tune on this one with --init-from {output}")
    return model, stored_vocab, replace(stored, **changes), state, arrays


# What resuming needs of the stored numbers beyond their types: the train command's
# ranges for the options (cli/train.py), and counters that never go below zero.
AT_LEAST = {"seq_len": 1, "batch_size": 1, "warmup": 0, "clip": 0, "steps": 0, "eval_every": 0,
            "save_every": 0, "val_chars": 0, "patience": 0, "seed": 0, "step": 0,
            "chars_seen": 0, "train_seconds": 0, "cursor": 0, "best_step": 0,
            "evals_since_best": 0}
ABOVE_ZERO = ("lr", "lr_scale")


def resumable_training(base, output: str):
    """(TrainOptions, TrainState) stored in base, a loaded checkpoint, once they can
    continue the run exactly: every field known to this charrnn and of its type and
    range, and the arrays that carry the run (Adam's moments, each stream's state) of the
    shapes the model and the stored batch give. Raises RunError."""
    import numpy as np

    from .checkpoint import check_record, unknown_fields
    from .optim import SCHEDULES
    from .trainer import TrainOptions, TrainState
    model, _, record, arrays = base
    parts = {"options": TrainOptions, "state": TrainState}
    for part, kind in parts.items():
        if part not in record:
            raise RunError(f"{output} holds no training {part} to resume: fine-tune from it "
                           f"with --init-from {output} instead")
        if unknown := unknown_fields(record[part], kind):
            # A newer charrnn's option or counter may change the run: continuing without
            # it would not be the run that was saved.
            from . import __version__
            raise RunError(f"{output} has training {part} that charrnn {__version__} does "
                           f"not know ({unknown}), as a newer charrnn writes: resume it "
                           f"with that version, or fine-tune from it with --init-from {output}")
    try:
        values = {part: check_record(record[part], kind, f"training {part}")
                  for part, kind in parts.items()}
        for part, stored in values.items():
            for name, value in stored.items():
                if value is None:
                    continue
                if name in AT_LEAST and value < AT_LEAST[name]:
                    raise ValueError(f"training {part} {name} is {value}, less than "
                                     f"{AT_LEAST[name]}")
                if name in ABOVE_ZERO and value <= 0:
                    raise ValueError(f"training {part} {name} is {value}, not positive")
        options, state = TrainOptions(**values["options"]), TrainState(**values["state"])
        if not 0 <= options.val_fraction < 1:
            raise ValueError(f"training options val_fraction is {options.val_fraction}, "
                             "not in [0, 1)")
        if options.lr_schedule not in SCHEDULES:
            raise ValueError(f"training options lr_schedule is {options.lr_schedule!r}, "
                             f"not one of {', '.join(SCHEDULES)}")
        if state.rng_state is not None:
            try:
                np.random.default_rng(0).bit_generator.state = state.rng_state
            except (ValueError, TypeError, KeyError, OverflowError):
                raise ValueError("training state rng_state is not a PCG64 state") from None
        cfg, streams = model.config, options.batch_size
        carried = {"adam_m": (model.flat.size,), "adam_v": (model.flat.size,),
                   "state_h": (cfg.layers, streams, cfg.hidden),
                   "state_c": (cfg.layers, streams, cfg.hidden)}  # (L, N, H)
        for name, shape in carried.items():
            array = arrays.get(name)
            if array is None:
                raise ValueError(f"array {name} is missing")
            if array.dtype.kind != "f" or array.shape != shape:
                raise ValueError(f"array {name} is {array.dtype} {list(array.shape)}, not "
                                 f"floating point of shape {list(shape)}")
    except ValueError as error:
        raise RunError(f"{output} is inconsistent: {error}") from None
    return options, state
