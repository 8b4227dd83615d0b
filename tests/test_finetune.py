"""Fine-tuning (`charrnn train NEW -o OUT --init-from OLD`): weights that depend on the
vocabulary move with their character, never with their index; new characters get fresh
rows; and a checkpoint given to --init-from or --resume that is damaged, newer, or
carries pickled objects is refused in one line without running code or overwriting
anything.
"""

import pickle

import numpy as np
import pytest
from clitools import assert_fails, run
from test_checkpoint import CreatesMarker, reencode

from charrnn.checkpoint import CHECKPOINT_FORMAT_VERSION, load_trained
from charrnn.finetune import shared_ids, transfer_by_character
from charrnn.model import CELLS, Model, ModelConfig
from charrnn.sample import Sampler
from charrnn.vocab import UNKNOWN_DISPLAY, Vocab

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--seq-len", "16",
        "--batch-size", "4", "--steps", "5", "--threads", "1", "--seed", "1", "--quiet"]


def model_for(vocab, cell="lstm", embed=4, seed=0, hidden=6, layers=2):
    model = Model(ModelConfig(cell=cell, vocab_size=vocab.size, hidden=hidden,
                              layers=layers, embed=embed), dtype=np.float64)
    model.initialise(np.random.default_rng(seed), vocab.counts + (3,) * vocab.has_unknown)
    return model


# ------------------------------------------------------------------ the remapping itself
@pytest.mark.parametrize("embed", [0, 4])
@pytest.mark.parametrize("cell", CELLS)
def test_rows_move_with_their_character(cell, embed):
    old_vocab = Vocab.from_text("bdf" * 2 + "x")  # b=0 d=1 f=2 x=3
    new_vocab = Vocab.from_text("abcdef")  # b=1 d=3 f=5; a c e are new; x is dropped
    old = model_for(old_vocab, cell, embed, seed=1)
    new = model_for(new_vocab, cell, embed, seed=2)
    fresh = {name: view.copy() for name, view in new.params.items()}
    added = transfer_by_character(old, old_vocab, new, new_vocab)
    assert added == ["a", "c", "e"]
    rows = "embed" if embed else "Wx0"
    po, pn = old.params, new.params
    for ch in "bdf":
        i, j = old_vocab.chars.index(ch), new_vocab.chars.index(ch)
        assert np.array_equal(pn[rows][j], po[rows][i]), ch
        assert np.array_equal(pn["Wy"][:, j], po["Wy"][:, i]), ch
        assert pn["by"][j] == po["by"][i], ch
    shift = np.median([po["by"][old_vocab.chars.index(ch)] - fresh["by"][new_vocab.chars.index(ch)]
                       for ch in "bdf"])
    for ch in added:
        j = new_vocab.chars.index(ch)
        assert np.array_equal(pn[rows][j], fresh[rows][j]), ch
        assert np.array_equal(pn["Wy"][:, j], fresh["Wy"][:, j]), ch
        # its unigram prior, moved into the old model's logit scale
        assert pn["by"][j] == pytest.approx(fresh["by"][j] + shift), ch
    for name in pn:
        if name not in (rows, "Wy", "by"):
            assert np.array_equal(pn[name], po[name]), name  # copied whole


def test_shared_characters_keep_their_predictions():
    # Over text of shared characters the fine-tuned model runs the same states and gives
    # the same logits to every shared character: its loss differs from the old model's
    # only by the normaliser, the same whatever the target.
    old_vocab = Vocab.from_text("the cat sat")
    new_vocab = Vocab.from_text("the cat sat on a mat!")
    old = model_for(old_vocab, seed=3)
    new = model_for(new_vocab, seed=4)
    transfer_by_character(old, old_vocab, new, new_vocab)
    text = "the cat sat at the"
    differences = []
    for target in "tc ":
        losses = []
        for model, vocab in ((old, old_vocab), (new, new_vocab)):
            x = vocab.encode(text)[0][None, :]
            y = np.full_like(x, vocab.chars.index(target))
            h, c = model.zero_state(1)
            _, per_step, h, _ = model.forward(x, y, h, c, need_grad=False)
            losses.append((per_step, h))
        assert np.allclose(losses[0][1], losses[1][1], rtol=0, atol=1e-12)  # same state
        differences.append(losses[1][0] - losses[0][0])
    assert np.all(differences[0] > 0)  # the new characters take some probability
    assert np.allclose(differences[0], differences[1])
    assert np.allclose(differences[0], differences[2])


def test_the_unknown_symbol_is_a_character_too():
    old_vocab = Vocab.from_text("aaabbc", min_count=2)  # a b + unknown
    new_vocab = Vocab.from_text("aabbbcdd", min_count=2)  # a b d + unknown
    old_ids, new_ids = shared_ids(old_vocab, new_vocab)
    assert old_ids.tolist() == [0, 1, old_vocab.unknown_id]
    assert new_ids.tolist() == [0, 1, new_vocab.unknown_id]
    old, new = model_for(old_vocab, seed=5), model_for(new_vocab, seed=6)
    assert transfer_by_character(old, old_vocab, new, new_vocab) == ["d"]
    assert np.array_equal(new.params["Wy"][:, new_vocab.unknown_id],
                          old.params["Wy"][:, old_vocab.unknown_id])
    plain = Vocab.from_text("ab")
    assert shared_ids(old_vocab, plain)[0].tolist() == [0, 1]  # no unknown on one side


def test_no_shared_character_leaves_the_output_layer_fresh():
    old_vocab, new_vocab = Vocab.from_text("abc"), Vocab.from_text("xyz")
    old, new = model_for(old_vocab, seed=7), model_for(new_vocab, seed=8)
    fresh_by = new.params["by"].copy()
    assert transfer_by_character(old, old_vocab, new, new_vocab) == ["x", "y", "z"]
    assert np.array_equal(new.params["by"], fresh_by)
    assert np.array_equal(new.params["Wh0"], old.params["Wh0"])


def test_another_architecture_is_refused():
    vocab = Vocab.from_text("abc")
    with pytest.raises(ValueError, match="hidden"):
        transfer_by_character(model_for(vocab, hidden=6), vocab, model_for(vocab, hidden=8),
                              vocab)


# ------------------------------------------------------------------------ through the CLI
ENGLISH = "the cat sat on the mat and the dog sat on the log.\n" * 40
GERMAN = "Über den Hügeln, die Katze saß auf der Matte; € 5!\n" * 40


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    (folder / "en.txt").write_text(ENGLISH, encoding="utf-8")
    (folder / "de.txt").write_text(GERMAN, encoding="utf-8")
    result = run("train", folder / "en.txt", "-o", folder / "old.ckpt", *TINY)
    assert result.exit_code == 0, result.stderr
    return folder


def test_fine_tuning_starts_from_the_old_weights_and_lists_new_characters(old, tmp_path):
    out = tmp_path / "new.ckpt"
    # A learning rate far below float32 resolution: the one step changes nothing, so the
    # checkpoint shows the starting point.
    result = run("train", old / "de.txt", "-o", out, "--init-from", old / "old.ckpt",
                 *TINY, "--steps", "1", "--lr", "1e-30")
    assert result.exit_code == 0, result.stderr
    new_chars = sorted(set(GERMAN) - set(ENGLISH))
    line = result.stderr.strip()  # the one line --quiet keeps
    assert "old.ckpt" in line and f"{len(new_chars)} characters" in line
    assert all(ch in line for ch in new_chars)
    dropped = set(ENGLISH) - set(GERMAN)
    assert f"{len(dropped)} of its characters" in line
    old_model, old_vocab, _, _ = load_trained(old / "old.ckpt")
    new_model, new_vocab, record, _ = load_trained(out)
    assert new_vocab == Vocab.from_text(GERMAN)  # the vocabulary of the new corpus
    assert record["state"]["step"] == 1 and new_model.config.hidden == 16
    for ch in set(GERMAN) & set(ENGLISH):
        i, j = old_vocab.chars.index(ch), new_vocab.chars.index(ch)
        assert np.array_equal(new_model.params["embed"][j], old_model.params["embed"][i])
        assert np.array_equal(new_model.params["Wy"][:, j], old_model.params["Wy"][:, i])
    assert np.array_equal(new_model.params["Wh0"], old_model.params["Wh0"])
    text = run("sample", out, "-n", "200", "--seed", "1", "--threads", "1").stdout
    assert len(text) == 200 and set(text) <= set(GERMAN)


def test_fine_tuning_takes_the_architecture_from_the_checkpoint(old, tmp_path):
    out = tmp_path / "new.ckpt"
    message = assert_fails(run("train", old / "de.txt", "-o", out, "--init-from",
                               old / "old.ckpt", *TINY, "--hidden", "32", "--cell", "gru"),
                           code=2)
    assert "--hidden" in message and "--cell" in message and not out.exists()
    result = run("train", old / "de.txt", "-o", out, "--init-from", old / "old.ckpt",
                 "--steps", "2", "--threads", "1", "--seq-len", "16", "--batch-size", "4",
                 "--dropout", "0.2", "--hidden", "16")  # same value, and a new dropout
    assert result.exit_code == 0, result.stderr
    config = load_trained(out)[0].config
    assert (config.hidden, config.layers, config.embed, config.dropout) == (16, 1, 8, 0.2)


def test_init_from_and_resume_together_is_a_usage_error(old, tmp_path):
    out = tmp_path / "m.ckpt"
    out.write_bytes((old / "old.ckpt").read_bytes())
    assert_fails(run("train", old / "de.txt", "-o", out, "--resume", "--init-from",
                     old / "old.ckpt"), code=2)
    assert out.read_bytes() == (old / "old.ckpt").read_bytes()


def test_resume_on_a_corpus_with_new_characters_points_to_init_from(old, tmp_path):
    out = tmp_path / "m.ckpt"
    out.write_bytes((old / "old.ckpt").read_bytes())
    message = assert_fails(run("train", old / "de.txt", "-o", out, "--resume",
                               "--steps", "8"))
    assert "€" in message and "--init-from" in message
    assert out.read_bytes() == (old / "old.ckpt").read_bytes()


# ------------------------------------------------------------ checkpoints that are refused
def bad_checkpoint(kind, good: bytes, marker) -> bytes:
    payload = pickle.dumps(CreatesMarker(marker), protocol=2)
    if kind == "truncated":
        return good[:len(good) // 2]
    if kind == "flipped":
        blob = bytearray(good)
        blob[len(blob) // 2] ^= 0x10
        return bytes(blob)
    if kind == "newer":
        return reencode(good, version=CHECKPOINT_FORMAT_VERSION + 1)
    if kind == "pickled-array":  # a charrnn checkpoint whose array claims dtype object

        def make_object(header):
            header["arrays"]["params"].update(dtype="object", shape=[1], offset=0,
                                              nbytes=len(payload))
        return reencode(good, edit_header=make_object,
                        data=payload + b"\0" * (-len(payload) % 64))
    if kind == "pickle":
        return payload
    if kind == "text":
        return b"just some notes\n"
    raise ValueError(kind)


KINDS = ["truncated", "flipped", "newer", "pickled-array", "pickle", "text"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_init_from_is_refused_in_one_line_and_overwrites_nothing(old, tmp_path, kind):
    marker = tmp_path / "marker"
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bad_checkpoint(kind, (old / "old.ckpt").read_bytes(), marker))
    out = tmp_path / "out.ckpt"
    out.write_bytes((old / "old.ckpt").read_bytes())  # a good checkpoint, and --force
    message = assert_fails(run("train", old / "de.txt", "-o", out, "--force",
                               "--init-from", bad, *TINY))
    assert "bad.ckpt" in message
    assert {"newer": "upgrade", "truncated": "truncated or corrupted",
            "flipped": "truncated or corrupted", "pickle": "never unpickles",
            "pickled-array": "forbidden dtype"}.get(kind, "not a charrnn checkpoint") in message
    assert not marker.exists()
    assert out.read_bytes() == (old / "old.ckpt").read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_checkpoint_to_resume_is_refused_and_kept(old, tmp_path, kind):
    marker = tmp_path / "marker"
    out = tmp_path / "out.ckpt"
    out.write_bytes(bad_checkpoint(kind, (old / "old.ckpt").read_bytes(), marker))
    before = out.read_bytes()
    message = assert_fails(run("train", old / "en.txt", "-o", out, "--resume", *TINY))
    assert "out.ckpt" in message
    assert not marker.exists()
    assert out.read_bytes() == before


def test_a_numpy_archive_with_pickled_objects_is_not_loaded(old, tmp_path):
    marker = tmp_path / "marker"
    archive = tmp_path / "old.npz"
    np.savez(archive, params=np.zeros(3), evil=np.array([CreatesMarker(marker)], dtype=object))
    message = assert_fails(run("train", old / "de.txt", "-o", tmp_path / "n.ckpt",
                               "--init-from", archive, *TINY))
    assert "old.npz" in message and "never unpickles" in message
    assert not marker.exists() and not (tmp_path / "n.ckpt").exists()


def test_missing_init_from_is_one_line(old, tmp_path):
    message = assert_fails(run("train", old / "de.txt", "-o", tmp_path / "n.ckpt",
                               "--init-from", tmp_path / "none.ckpt", *TINY))
    assert "none.ckpt" in message and "no such file" in message


def test_sampling_a_folded_vocabulary_never_emits_the_unknown_symbol(old, tmp_path):
    out = tmp_path / "m.ckpt"
    result = run("train", old / "de.txt", "-o", out, *TINY, "--max-vocab", "6")
    assert result.exit_code == 0, result.stderr
    _, vocab, _, _ = load_trained(out)
    assert len(vocab.chars) == 6 and vocab.has_unknown
    text = run("sample", out, "-n", "2000", "-t", "3", "--seed", "2", "--threads", "1").stdout
    assert len(text) == 2000 and UNKNOWN_DISPLAY not in text and set(text) <= set(vocab.chars)
    model, vocab, _, _ = load_trained(out)
    assert Sampler(model, vocab).banned[vocab.unknown_id]
