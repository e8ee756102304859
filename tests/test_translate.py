"""The translate task: data splitting, tokens, masking, greedy / beam decoding, the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_run

from seqapp.errors import SeqappError
from seqapp.runs import Run
from seqapp.tasks import load_config
from seqapp.tasks.translate import (
    Translate,
    bleu_chrf,
    detokenizer,
    group_by_source,
    keep_short,
    limit_pairs,
    make_translator,
    read_pairs,
    spacing_rules,
    split_groups,
    teacher_forcing_arrays,
    tokenizers_of,
)
from seqapp.tasks.translate_decoding import beam_search, greedy_search, log_softmax, normalised
from seqapp.text import END_ID, PAD_ID, START_ID, Tokenizer
from seqapp.training import compile_model

PAIRS = [("I am cold.", "J'ai froid."), ("I am tired.", "Je suis fatigué."), ("I am tired.", "Je suis fatiguée."),
         ("She reads a book.", "Elle lit un livre."), ("Where is the station?", "Où est la gare ?"),
         ("Hello.", "Bonjour."), ("We eat bread.", "Nous mangeons du pain."), ("Are you ready?", "Es-tu prêt ?")]


def write_tsv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- data ---------------------------------------------------------------------------------
def test_read_pairs_ignores_extra_columns_and_blank_lines(tmp_path):
    path = write_tsv(tmp_path, ["Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org", "", "Run!\tCours !"])
    assert read_pairs(path) == [("Go.", "Va !"), ("Run!", "Cours !")]


@pytest.mark.parametrize("bad_line", ["no tab on this line", "source only\t", "\ttarget only"])
def test_malformed_line_is_reported_with_its_line_number(tmp_path, bad_line):
    path = write_tsv(tmp_path, ["Go.\tVa !", "Hi.\tSalut.", bad_line, "Run!\tCours !"])
    with pytest.raises(SeqappError, match="line 3 "):
        read_pairs(path)


def test_malformed_file_on_the_command_line_gives_one_line_error(tmp_path, cli):
    path = write_tsv(tmp_path, ["Go.\tVa !"] * 4 + ["broken"])
    result = cli("train", "translate", "--data", path, "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert "line 5" in result.output and "Traceback" not in result.output


def test_split_keeps_every_translation_of_a_source_together():
    pairs = [(f"s{i}", f"t{i}-{k}") for i in range(50) for k in range(1 + i % 3)]
    groups = group_by_source(pairs)
    assert len(groups) == 50 and dict(groups)["s2"] == ["t2-0", "t2-1", "t2-2"]
    order = np.random.default_rng(0).permutation(len(groups))
    splits = split_groups([groups[i] for i in order], 0.1, 0.2)
    sources = [{source for source, _ in part} for part in (splits.train, splits.val, splits.test)]
    assert [len(part) for part in sources] == [35, 5, 10]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert sum(len(refs) for part in (splits.train, splits.val, splits.test) for _, refs in part) == len(pairs)


def test_split_is_seeded_and_limits_apply(tmp_path):
    lines = [f"sentence number {i} .\tphrase {i} ." for i in range(40)] + ["a b c d e f g h\tx"]
    path = write_tsv(tmp_path, lines)
    cfg = load_config("translate", ["data.max_len=5", "data.split_seed=3"], {"data.path": str(path)})
    first, second = Translate().load_data(cfg), Translate().load_data(cfg)
    assert first == second
    every = first.train + first.val + first.test
    assert len(every) == 40 and all("a b c" not in source for source, _ in every)  # 8 tokens > max_len
    other = Translate().load_data(load_config("translate", ["data.split_seed=4"], {"data.path": str(path)}))
    assert [s for s, _ in other.test] != [s for s, _ in first.test]
    assert limit_pairs([("a", ["1", "2"]), ("b", ["3"]), ("c", ["4", "5"])], 4) == [("a", ["1", "2"]), ("b", ["3"])]
    with pytest.raises(SeqappError, match="max_len"):
        keep_short([("a b c", "x y z")], "word", True, 2)


def test_too_few_sources_to_split_is_a_clear_error():
    with pytest.raises(SeqappError, match="too few"):
        split_groups([("a", ["b"]), ("c", ["d"])], 0.4, 0.4)


# -- tokens -------------------------------------------------------------------------------
def test_teacher_forcing_adds_start_to_inputs_and_end_to_targets():
    groups = group_by_source(PAIRS)
    source_tokenizer = Tokenizer("word", lower=True).fit([s for s, _ in PAIRS])
    target_tokenizer = Tokenizer("word").fit([t for _, t in PAIRS])
    x, y = teacher_forcing_arrays(groups, source_tokenizer, target_tokenizer)
    assert len(y) == len(PAIRS) and x["target_in"].shape == y.shape
    assert (x["target_in"][:, 0] == START_ID).all()
    for target_in, target_out, (_, target) in zip(x["target_in"], y, [(s, t) for s, refs in groups for t in refs]):
        ids = target_tokenizer.encode(target)
        assert list(target_in[1:len(ids) + 1]) == ids  # <s> then the sentence
        assert list(target_out[:len(ids) + 1]) == ids + [END_ID]  # the sentence then </s>
        assert not target_out[len(ids) + 1:].any() and START_ID not in target_out
    assert (x["source"] != PAD_ID).sum(axis=1).tolist() == [len(source_tokenizer.encode(s))
                                                           for s, refs in groups for _ in refs]


def test_learned_spacing_detokenizes_french_punctuation():
    targets = ["Où est la gare ?", "Es-tu prêt ?", "Va !", "J'ai froid.", "Bonjour, Anna."]
    tokenizer = Tokenizer("word").fit(targets)
    join = detokenizer(tokenizer, spacing_rules(targets, tokenizer))
    for text in targets:
        assert join(tokenizer.split(text)) == text
    english = Tokenizer("word").fit(["Go!", "Are you ready?"])
    assert detokenizer(english, spacing_rules(["Go!", "Are you ready?"], english))(["Go", "!"]) == "Go!"


def test_bleu_counts_every_reference():
    references = [["Je suis fatigué.", "Je suis fatiguée."], ["J'ai froid."]]
    scores = bleu_chrf(["Je suis fatiguée.", "J'ai froid."], references)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["bleu_1ref"] < 100.0 and scores["chrf_1ref"] < scores["chrf"]


# -- decoding on a hand-built model ---------------------------------------------------------
A, B = 4, 5
# A bigram model over <pad> <unk> <s> </s> A B: greedy takes A (0.6) and wanders, while
# "B </s>" (0.4 * 0.9) is the most likely sentence.
TABLE = np.full((6, 6), 1e-9)
TABLE[START_ID, [A, B]] = [0.6, 0.4]
TABLE[A, [A, B, END_ID]] = [0.35, 0.35, 0.3]
TABLE[B, [A, B, END_ID]] = [0.05, 0.05, 0.9]
TABLE[[PAD_ID, END_ID]] = 1.0
TABLE = np.log(TABLE / TABLE.sum(axis=1, keepdims=True))


def toy_step(tokens, context, states):
    return TABLE[tokens[:, -1]], states, None


def best_by_brute_force(max_len: int, length_penalty: float) -> tuple[list[int], float]:
    """Score every output of at most max_len tokens, the way beam search ranks them."""
    best = ([], -np.inf)
    for length in range(1, max_len + 1):
        for ids in itertools.product([A, B, END_ID], repeat=length):
            if END_ID in ids[:-1] or (length < max_len and ids[-1] != END_ID):
                continue  # outputs end with </s>, or are cut at max_len
            log_prob = sum(TABLE[prev, nxt] for prev, nxt in zip((START_ID,) + ids, ids))
            score = normalised(log_prob, length, length_penalty)
            if score > best[1]:
                best = (list(ids), score)
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_returns_the_highest_scoring_hypothesis(length_penalty):
    states = [np.zeros((2, 1))]
    expected_ids, expected_score = best_by_brute_force(4, length_penalty)
    assert expected_ids == [B, END_ID]
    for found in beam_search(toy_step, [], states, max_len=4, beam=3, length_penalty=length_penalty):
        assert found.ids == expected_ids
        assert found.score == pytest.approx(expected_score)
    greedy = greedy_search(toy_step, [], states, max_len=4, length_penalty=length_penalty)[0]
    assert greedy.ids[0] == A and greedy.score < expected_score


def test_beam_of_one_is_greedy_on_the_toy_model():
    states = [np.zeros((3, 1))]
    greedy = greedy_search(toy_step, [], states, max_len=6)
    beam = beam_search(toy_step, [], states, max_len=6, beam=1)
    assert [h.ids for h in greedy] == [h.ids for h in beam]
    assert [h.log_prob for h in greedy] == pytest.approx([h.log_prob for h in beam])


def test_decoding_stops_at_end_or_max_len():
    found = greedy_search(toy_step, [], [np.zeros((1, 1))], max_len=3)[0]
    assert len(found.ids) == 3 and END_ID not in found.ids  # A A A: cut at max_len
    assert beam_search(toy_step, [], [np.zeros((1, 1))], max_len=3, beam=2)[0].ids == [B, END_ID]


def test_log_softmax_rows_sum_to_one():
    rows = log_softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -1000.0]]))
    assert np.exp(rows).sum(axis=1) == pytest.approx([1.0, 1.0])


# -- the Keras encoder-decoder -------------------------------------------------------------
def small_run(tmp_path: Path, *overrides: str) -> Run:
    """An untrained run on PAIRS (random weights are enough for the equivalence tests)."""
    import keras

    keras.utils.set_random_seed(1)
    cfg = load_config("translate", ["model.units=8", "model.embedding_dim=6", *overrides])
    task = Translate()
    splits = split_groups(group_by_source(PAIRS), 0.0, 0.0)
    prep = task.fit_preprocessing(cfg, splits)
    model = task.build_model(cfg, prep)
    compile_model(model, task, cfg, prep, batches=1)  # as training does: the task's objective
    for weight in model.weights:  # sharper random logits: fewer near-ties between tokens
        weight.assign(weight * 3.0)
    return Run(path=tmp_path, config=cfg, preprocessing=prep, _model=model)


MODEL_VARIANTS = [
    ["model.attention=none", "model.cell=gru"],
    ["model.attention=luong", "model.luong_score=dot", "model.cell=lstm", "model.bidirectional=true"],
    ["model.attention=luong", "model.luong_score=general", "model.cell=simplernn", "model.layers=2"],
    ["model.attention=bahdanau", "model.cell=lstm", "model.layers=2", "model.bidirectional=true"],
]


@pytest.mark.parametrize("overrides", MODEL_VARIANTS, ids=lambda o: "-".join(v.split("=")[1] for v in o))
def test_step_by_step_decoder_matches_teacher_forcing(tmp_path, overrides):
    run = small_run(tmp_path, *overrides)
    x, _ = teacher_forcing_arrays(group_by_source(PAIRS), *tokenizers_of(run.preprocessing))
    expected = log_softmax(np.asarray(run.model(x, training=False)))
    translator = make_translator(run)
    context, states = translator.encode(x["source"])
    for position in range(x["target_in"].shape[1]):
        log_probs, states, attention = translator.step(x["target_in"][:, position:position + 1], context, states)
        real = x["target_in"][:, position] != PAD_ID
        np.testing.assert_allclose(log_probs[real], expected[real, position], atol=1e-4)
        if attention is not None:
            np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-5)
            assert not attention[x["source"] == PAD_ID].any()  # no weight on source padding


def test_padding_changes_neither_outputs_nor_loss(tmp_path):
    import keras

    run = small_run(tmp_path, "model.attention=bahdanau", "model.bidirectional=true", "model.cell=lstm")
    x, y = teacher_forcing_arrays(group_by_source(PAIRS), *tokenizers_of(run.preprocessing))
    padded = {name: np.pad(ids, ((0, 0), (0, 5))) for name, ids in x.items()}
    padded_y = np.pad(y, ((0, 0), (0, 5)))
    short, long = np.asarray(run.model(x)), np.asarray(run.model(padded))
    np.testing.assert_allclose(long[:, : y.shape[1]], short, atol=1e-5)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD_ID)
    assert float(loss(padded_y, long)) == pytest.approx(float(loss(y, short)), rel=1e-5)
    assert float(run.model.compute_loss(x, y, run.model(x))) == pytest.approx(float(loss(y, short)), rel=1e-5)


@pytest.mark.parametrize("overrides", [MODEL_VARIANTS[0], MODEL_VARIANTS[3]], ids=["none", "bahdanau"])
def test_beam_of_one_equals_greedy_and_batches_equal_one_by_one(tmp_path, overrides):
    translator = make_translator(small_run(tmp_path, *overrides))
    sources = [source for source, _ in PAIRS[::-1]]
    for beam in (1, 3):
        together = translator.decode_ids(sources, beam=beam)
        alone = [translator.decode_ids([source], beam=beam)[0] for source in sources]
        assert [h.ids for h in together] == [h.ids for h in alone]
        assert [h.score for h in together] == pytest.approx([h.score for h in alone], abs=1e-4)
        assert [h.ids for h in translator.decode_ids(sources, beam=beam, batch_size=3)] == [h.ids for h in together]
    greedy = translator.decode_ids(sources, beam=1)
    context, states = translator.encode(translator.source_ids(sources))
    beam_one = beam_search(translator.step, context, states, translator.max_len, beam=1)
    assert [h.ids for h in greedy] == [h.ids for h in beam_one]


# -- the command line ------------------------------------------------------------------------
TINY = ["--set", "model.units=16", "--set", "model.embedding_dim=8", "--set", "train.batch_size=16",
        "--set", "model.beam=2", "--set", "train.litert=false",  # predict on tf; test_translate_litert: LiteRT
        "--epochs", "1", "-q"]


def test_train_evaluate_predict_on_the_bundled_pairs(tmp_path, cli, tiny_runs):
    out = tmp_path / "runs"
    run_dir = copy_run(tiny_runs("translate"), out).path  # the tiny settings on the bundled pairs, one epoch
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["data"]["test"]["sources"] > 0
    assert (run_dir / "plots" / "attention.png").stat().st_size > 0

    result = cli("evaluate", "--out", out)
    assert result.exit_code == 0, result.output
    assert "beam 2" in result.output and "copy source" in result.output

    first = cli("predict", "--out", out, "hello", "I am cold.")
    assert first.exit_code == 0, first.output
    assert len(first.stdout.splitlines()) == 2  # one line per input (an untrained model may say nothing)
    plot = tmp_path / "att.png"
    result = cli("predict", "--out", out, "--beam", "3", "--attention-plot", plot, "--json", "She reads a book.")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["source"] == "She reads a book." and answer["beam"] == 3
    assert plot.stat().st_size > 0

    bad = cli("predict", "--out", out, "--beam", "0", "hello")
    assert bad.exit_code == 2 and "--beam" in bad.output
    bad = cli("predict", "--out", out, "--horizon", "3", "hello")
    assert bad.exit_code == 2


def best_seconds(call, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed calls (the least disturbed by other processes)."""
    import time

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def test_a_long_source_costs_what_a_short_one_does_and_is_cut_with_a_warning(tiny_runs, cli):
    """The source is cut to the run's max_len tokens (the LiteRT encoder's time and memory grew
    faster than the length: 10,000 words took minutes), with a warning and a note in --json."""
    run = tiny_runs("translate")
    max_len = run.preprocessing["max_len"]
    short, long = " ".join(["cold"] * max_len), " ".join(["cold"] * (100 * max_len))
    task = Translate()
    assert task.engine(run, "auto") == "litert"
    list(task.predict(run, [short], engine="litert"))  # loads the graphs
    short_s = best_seconds(lambda: list(task.predict(run, [short], engine="litert")))
    long_s = best_seconds(lambda: list(task.predict(run, [long], engine="litert")))
    assert long_s < 3 * short_s + 0.02, (short_s, long_s)  # 100 times the tokens, about the same time

    result = cli("predict", "--run", run.path, "--json", long, short)
    assert result.exit_code == 0, result.output
    cut, whole = [json.loads(line) for line in result.stdout.splitlines()]
    assert cut["translation"] == whole["translation"]  # the same first max_len tokens
    assert cut["warning"] == (f"only the first {max_len} of its {100 * max_len} tokens are translated "
                              "(the run's max_len)")
    assert "warning" not in whole
    assert (f"warning: 1 of 2 inputs have more than the run's max_len of {max_len} tokens (the longest "
            f"{100 * max_len}): only the first {max_len} of each are translated; give one sentence per input"
            in result.stderr)
    alone = cli("predict", "--run", run.path, "--engine", "tf", long)  # Keras cuts the same way
    assert alone.exit_code == 0, alone.output
    assert alone.stdout.splitlines() == [cut["translation"]]
    assert (f"warning: the input has {100 * max_len} tokens, more than the run's max_len of {max_len}: only its "
            f"first {max_len} are translated" in alone.stderr)


def test_attention_plot_needs_an_attention_model(tmp_path, cli):
    out = tmp_path / "runs"
    result = cli("train", "translate", "--out", out, "--set", "model.attention=none",
                 "--set", "data.max_pairs=40", *TINY)
    assert result.exit_code == 0, result.output
    assert "BLEU" in result.output and "copy source" in result.output
    result = cli("predict", "--out", out, "--attention-plot", tmp_path / "a.png", "hello")
    assert result.exit_code == 2 and "attention" in result.output


def test_bad_settings_are_refused(cli, tmp_path):
    result = cli("train", "translate", "--set", "model.attention=transformer", "--out", tmp_path)
    assert result.exit_code == 2 and "attention" in result.output
    result = cli("train", "translate", "--set", "data.level=byte", "--out", tmp_path)
    assert result.exit_code == 2 and "data.level" in result.output


@pytest.mark.slow
def test_fra_eng_attention_beats_copying_the_source(shared_data, tmp_path, cli):
    data = shared_data / "translation" / "fra-eng.tsv"
    out = tmp_path / "runs"
    result = cli("train", "translate-fra-eng", "--data", data, "--out", out, "--epochs", "5", "-q",
                 "--set", "model.units=128", "--set", "model.beam=3")
    assert result.exit_code == 0, result.output
    metrics = json.loads(next((out / "translate").iterdir()).joinpath("metrics.json").read_text())
    assert metrics["greedy"]["chrf"] > metrics["baseline_copy_source"]["chrf"] + 10
    assert metrics["beam"]["bleu"] > metrics["baseline_copy_source"]["bleu"] + 5
