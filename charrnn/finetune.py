"""Fine-tuning: a model for a new vocabulary started from a trained one, the weights that
depend on the vocabulary matched by character, never by index.

Those weights are the input rows (embed (V, E), or Wx0 (V, GH) with one-hot input), the
output columns Wy[:, v] and the output biases by[v]. A character both vocabularies hold
takes its old rows with it wherever its id lands; the unknown symbol counts as one
character. A character only the new vocabulary holds keeps the fresh initialisation of
the model it is copied into (see Model.initialise), its output bias moved into the old
model's logit scale: by = log unigram frequency + the median, over shared characters, of
(old bias - their log unigram frequency). Everything else (recurrent weights and biases,
upper layers) is copied whole. This answers torch-rnn #147: a new character set must not
silently reuse the rows of whatever character had its index before.

With an adaptive softmax (adaptive.py) on either side, a character's output weights go
with it when it sits in the same part of both output layers: a head column (a full
softmax is all head), or a column of the same tail cluster, whose projection then comes
along if it has the same width; the head's cluster tokens likewise. Any other output
weight keeps its fresh initialisation.
"""

from __future__ import annotations

import numpy as np


def shared_ids(old_vocab, new_vocab) -> tuple[np.ndarray, np.ndarray]:
    """(old ids, new ids) of every character both vocabularies hold, plus the unknown
    symbol when both have one."""
    old_index = {ch: k for k, ch in enumerate(old_vocab.chars)}
    pairs = [(old_index[ch], k) for k, ch in enumerate(new_vocab.chars) if ch in old_index]
    if old_vocab.has_unknown and new_vocab.has_unknown:
        pairs.append((old_vocab.unknown_id, new_vocab.unknown_id))
    old_ids, new_ids = zip(*pairs) if pairs else ((), ())
    return np.array(old_ids, np.int64), np.array(new_ids, np.int64)


def transfer_by_character(old, old_vocab, new, new_vocab) -> list[str]:
    """Copy the weights of model old (vocabulary old_vocab) into model new (vocabulary
    new_vocab, same architecture otherwise, freshly initialised). Returns the characters
    of new_vocab that old_vocab lacks, which keep their fresh rows."""
    old_cfg, new_cfg = old.config, new.config
    for name in ("cell", "layers", "hidden", "embed"):
        if getattr(old_cfg, name) != getattr(new_cfg, name):
            raise ValueError(f"{name} differs: {getattr(old_cfg, name)} != "
                             f"{getattr(new_cfg, name)}")
    old_ids, new_ids = shared_ids(old_vocab, new_vocab)
    po, pn = old.params, new.params
    input_rows = "embed" if new_cfg.embed else "Wx0"  # (V, E) or (V, GH), by input id
    for name, target in pn.items():
        if name == input_rows:
            target[new_ids] = po[name][old_ids]
        elif not is_output(name):
            target[...] = po[name]
    old_places, new_places = output_places(old), output_places(new)
    pairs = {}  # part -> (old columns, new columns) of the characters in it in both
    for old_id, new_id in zip(old_ids, new_ids):
        (old_part, old_column), (new_part, new_column) = old_places[old_id], new_places[new_id]
        if old_part == new_part:
            pairs.setdefault(old_part, ([], []))
            pairs[old_part][0].append(old_column)
            pairs[old_part][1].append(new_column)
    if "head" in pairs:  # else the head stays fresh
        old_columns, new_columns = pairs["head"]
        shift = np.median(po["by"][old_columns] - pn["by"][new_columns])
        pn["by"][...] += shift
        pn["Wy"][:, new_columns] = po["Wy"][:, old_columns]
        pn["by"][new_columns] = po["by"][old_columns]
    for c in range(min(len(old.config.tails), len(new.config.tails))):
        old_dim, new_dim = old.config.tails[c][1], new.config.tails[c][1]
        if old_dim == new_dim:  # the cluster's token, projection and shared columns
            pn["Wy"][:, new.config.head + c] = po["Wy"][:, old.config.head + c]
            pn["by"][new.config.head + c] = po["by"][old.config.head + c]
            pn[f"Pt{c}"][...] = po[f"Pt{c}"]
            if c in pairs:
                old_columns, new_columns = pairs[c]
                pn[f"Wt{c}"][:, new_columns] = po[f"Wt{c}"][:, old_columns]
                pn[f"bt{c}"][new_columns] = po[f"bt{c}"][old_columns]
    known = set(old_vocab.chars)
    return [ch for ch in new_vocab.chars if ch not in known]


def is_output(name: str) -> bool:
    """Whether a parameter belongs to the output layer (model.py, adaptive.py)."""
    return name in ("Wy", "by") or name[:2] in ("Pt", "Wt", "bt")


def output_places(model) -> dict:
    """{id: (part, column)}: where each id's output weights are, part "head" (a column of
    Wy) or a tail cluster's index c (a column of Wt{c})."""
    cfg = model.config
    if not cfg.head:
        return {v: ("head", v) for v in range(cfg.vocab_size)}
    layout = model.layout
    places = {int(v): ("head", r) for r, v in enumerate(layout.order[:cfg.head])}
    for c, (start, size) in enumerate(zip(layout.starts, layout.sizes)):
        places.update({int(v): (c, k) for k, v in enumerate(layout.order[start:start + size])})
    return places
