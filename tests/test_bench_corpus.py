"""charrnn.bench.corpus's corpora: the real text widened to the generated alphabet's size."""

import collections

from charrnn.bench import corpus as bench_corpus


def test_a_widened_text_keeps_its_start_and_reaches_the_alphabet_size(tmp_path):
    source = tmp_path / "real.txt"
    source.write_text("天地玄黄，宇宙洪荒。\n日月盈昃，辰宿列张。\n" * 50, encoding="utf-8")
    widened = tmp_path / "widened.txt"
    bench_corpus.write_widened(str(source), str(widened), 300)
    text = widened.read_text(encoding="utf-8")
    start = source.read_text(encoding="utf-8")[:300]
    assert text.startswith(start)
    counts = collections.Counter(text)
    assert len(counts) == bench_corpus.CJK_DISTINCT
    added = set(counts) - set(start) - {"\n"}
    assert added and all(counts[char] == 3 for char in added)
