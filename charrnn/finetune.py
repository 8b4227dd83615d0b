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
    if old_ids.size:  # else the whole output layer stays fresh
        shift = np.median(po["by"][old_ids] - pn["by"][new_ids])
        pn["by"][...] += shift
    input_rows = "embed" if new_cfg.embed else "Wx0"  # (V, E) or (V, GH), by input id
    for name, target in pn.items():
        if name in (input_rows, "by"):
            target[new_ids] = po[name][old_ids]
        elif name == "Wy":  # (H, V), by output id
            target[:, new_ids] = po[name][:, old_ids]
        else:
            target[...] = po[name]
    known = set(old_vocab.chars)
    return [ch for ch in new_vocab.chars if ch not in known]
