"""``seqapp export`` of a translate run: the SavedModel translates as ``seqapp predict`` does.

One small run is trained (enough epochs and a high enough learning rate that greedy decoding
writes words and punctuation, with a short ``max_len`` so a long sentence reaches it),
exported with the CLI and loaded in a fresh process that cannot import seqapp (the helpers
of ``test_export``; a ``process`` test). Its translations must equal ``seqapp predict``
(greedy, the default) exactly. The export's layout is checked on the session's tiny run. The
in-graph join is also compared with the Python detokenizer on random ids and spacing rules,
which a tiny model would never exercise all of.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_export import ask_fresh_process, error_line, export_all, train

MAX_LEN = 8
SOURCES = ["I am cold.", "hello", "", "ZXQV blorf, UNKNOWNWORD?!", "WHERE IS THE STATION?", "She reads a book .",
           " ".join(["I am cold and you are warm, the cat is on the table."] * 3)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The run, and the fresh process's answers to the same sentences (all at once, and alone)."""
    root = tmp_path_factory.mktemp("export_translate")
    run = train("translate", root, ["train.learning_rate=0.02", f"data.max_len={MAX_LEN}", "data.max_pairs=200"],
                epochs=8)
    export_all(root, {"translate": run})
    requests = {"translate": [{"texts": SOURCES}, *({"texts": [source]} for source in SOURCES[2:4])]}
    return root, run, ask_fresh_process(root, requests)


@pytest.mark.process
def test_export_translates_as_predict(world, cli):
    root, run, child = world
    assert child["seqapp_importable"] is False and child["seqapp_loaded"] is False
    decoding = root / "exports" / "translate" / "1" / "assets" / "decoding.json"
    assert json.loads(decoding.read_text(encoding="utf-8"))["max_len"] == MAX_LEN  # the run's, not the default
    answers = child["answers"]["translate"]
    shown = cli("predict", "--run", run.path, "--json", *SOURCES)
    assert shown.exit_code == 0, shown.output
    expected = [json.loads(line)["translation"] for line in shown.stdout.splitlines()]
    assert answers[0]["translations"] == expected
    assert [answer["translations"] for answer in answers[1:]] == [[text] for text in expected[2:4]]  # alone
    assert any(len(text.split()) > 1 for text in expected), expected  # the run writes words, not nothing
    assert all("<unk>" not in text and "<s>" not in text for text in expected)
    print("\ntranslate: " + " | ".join(f"{source[:30]!r} -> {text!r}" for source, text in zip(SOURCES, expected)))


def test_export_layout_assets_readme_and_litert_refusal(tiny_runs, tmp_path, cli, tree_hash):
    run, root = tiny_runs("translate"), tmp_path
    export_all(root, {"translate": run})
    folder = root / "exports" / "translate"
    assets = folder / "1" / "assets"
    assert json.loads((assets / "decoding.json").read_text(encoding="utf-8"))["max_len"] == run.config.data.max_len
    target = json.loads((assets / "target_vocabulary.json").read_text(encoding="utf-8"))
    assert target["vocab"] == run.preprocessing["target_tokenizer"]["vocab"] and "spacing" in target
    assert "`translations`: `string[N]`" in (folder / "README.md").read_text(encoding="utf-8")
    before = tree_hash(root)
    line = error_line(cli("export", "--run", run.path, "--to", root / "lite", "--format", "litert"))
    assert "a translate run cannot be exported as litert: its encoder and decoder step are two graphs" in line
    assert line.endswith("use --format saved_model") and tree_hash(root) == before


@pytest.mark.parametrize("level,rules", [
    ("word", {"before_space": ["?", "!"], "before_no_space": [".", "-"], "after_space": ["«"],
              "after_no_space": ["-", "l'"]}),
    ("word", {}), ("char", {})])
def test_in_graph_join_is_the_detokenizer(level, rules):
    """Random greedy outputs (END anywhere, padding after it) join as ``Translator.text`` joins them."""
    import tensorflow as tf

    from seqapp.tasks.translate import detokenizer
    from seqapp.tasks.translate_decoding import trim
    from seqapp.tasks.translate_serving import joined, spacing_tables
    from seqapp.text import END_ID, PAD_ID, Tokenizer

    words = ["Je", "suis", ".", "?", "!", "-", "(", ")", "'s", "n't", "\n", "«", "»", "est-ce", "l'", "x(", ",", "é"]
    tokenizer = Tokenizer(level, vocab=words)
    rng = np.random.default_rng(0)
    ids = rng.integers(END_ID, len(tokenizer.vocab), size=(300, 9)).astype(np.int32)
    ends = rng.integers(0, 12, size=len(ids))
    for row, end in zip(ids, ends):
        if end < len(row):
            row[end], row[end + 1:] = END_ID, PAD_ID
    texts = joined(tf.constant(ids), tokenizer.vocab, spacing_tables(tokenizer.to_dict(), rules)).numpy()
    detokenize = detokenizer(tokenizer, rules)
    expected = [detokenize(tokenizer.tokens(trim(row))) for row in ids]
    assert [text.decode("utf-8") for text in texts] == expected


def test_in_graph_greedy_loop_is_greedy_search():
    """A toy step model: the graph loop picks the ids ``greedy_search`` picks, never a banned one
    (the toy favours them), and stops at ``max_len`` for rows that never produce END."""
    import tensorflow as tf

    from seqapp.tasks.translate_decoding import BANNED_IDS, greedy_search, log_softmax, trim
    from seqapp.tasks.translate_serving import greedy_ids
    from seqapp.text import END_ID

    rng = np.random.default_rng(1)
    table = rng.normal(size=(12, 12)).astype(np.float32)
    table[:, list(BANNED_IDS)] += 5.0
    offsets = rng.normal(size=12).astype(np.float32)
    rows = np.arange(20, dtype=np.float32)[:, None] / 4

    def numpy_step(tokens, context, states):
        return log_softmax(table[tokens[:, 0]] + states[0] * offsets), states, None

    def graph_step(inputs, training=False):
        tokens, state = inputs
        return [tf.gather(table, tokens[:, 0]) + state * offsets, state]

    expected = [hyp.ids for hyp in greedy_search(numpy_step, [], [rows], max_len=6)]
    found = greedy_ids(graph_step, [], [tf.constant(rows)], 6, 12).numpy()
    assert [trim(row) for row in found] == expected
    assert not np.isin(found, BANNED_IDS[1:]).any() and found.shape[1] <= 6
    assert any(len(ids) == 6 and ids[-1] != END_ID for ids in expected)  # some rows ran to max_len
