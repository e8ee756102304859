"""Decoding choices at predict time (issue 28 part 3).

translate: ``--n-best``, ``--length-penalty``, ``--max-len``, ``--no-repeat-ngram``, ``--replace-unk``;
textgen: ``--stop`` and ``--no-repeat-ngram`` on ``generate`` (and ``predict``); the same options on
``seqapp serve``'s ``/predict`` and ``/generate``, within its caps; and every bad value as one line,
exit 2, nothing saved changed, answered before TensorFlow starts where the run's files suffice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import answers_without_tensorflow, copy_run, serving, tiny_config
from test_bad_input import one_error_line

from seqapp.sampling import repeated_ngram_mask
from seqapp.tasks.translate_decoding import (
    Translator,
    beam_search,
    greedy_search,
    ranked_search,
)
from seqapp.text import END_ID, OOV_ID, PAD_ID, START_ID, Tokenizer


def repeats_an_ngram(tokens: list, size: int) -> bool:
    """True when some n-gram of ``size`` tokens occurs twice in ``tokens``."""
    grams = [tuple(tokens[i:i + size]) for i in range(len(tokens) - size + 1)]
    return len(grams) != len(set(grams))


# -- the search, on hand-built models ---------------------------------------------------------
A, B, C = 4, 5, 6
# A bigram model over <pad> <unk> <s> </s> A B C that likes to loop: A -> B -> A -> B ...
TABLE = np.full((7, 7), 1e-9)
TABLE[START_ID, [A, B, C]] = [0.5, 0.3, 0.2]
TABLE[A, [B, C, END_ID]] = [0.6, 0.2, 0.2]
TABLE[B, [A, C, END_ID]] = [0.6, 0.1, 0.3]
TABLE[C, [A, B, END_ID]] = [0.2, 0.2, 0.6]
TABLE[[PAD_ID, END_ID]] = 1.0
TABLE = np.log(TABLE / TABLE.sum(axis=1, keepdims=True))


def toy_step(tokens, context, states):
    return TABLE[tokens[:, -1]], states, None


def test_repeated_ngram_mask_matches_brute_force():
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 4):
        history = rng.integers(0, 4, (30, 9))
        mask = repeated_ngram_mask(history, size, 4)
        for row, tokens in zip(mask, history.tolist()):
            held = {tuple(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}
            expected = {token for token in range(4) if tuple((tokens + [token])[-size:]) in held}
            assert set(np.flatnonzero(row)) == expected, (size, tokens)
    assert not repeated_ngram_mask(np.zeros((2, 0), int), 2, 4).any()


def test_n_best_is_ranked_distinct_and_starts_with_the_beam_output():
    states = [np.zeros((2, 1))]
    for beam, n_best in ((3, 3), (5, 2), (4, 4)):
        ranked = ranked_search(toy_step, [], states, max_len=5, beam=beam, n_best=n_best)
        best = beam_search(toy_step, [], states, max_len=5, beam=beam)
        for hypotheses, plain in zip(ranked, best):
            assert len(hypotheses) == n_best
            assert len({tuple(h.ids) for h in hypotheses}) == n_best
            scores = [h.score for h in hypotheses]
            assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
            assert hypotheses[0].ids == plain.ids and hypotheses[0].score == plain.score


def test_no_repeat_ngram_holds_in_greedy_and_beam_search():
    states = [np.zeros((1, 1))]
    looping = greedy_search(toy_step, [], states, max_len=8)[0].ids
    assert looping[:4] == [A, B, A, B]  # without the option: A B A B ...
    for size in (1, 2, 3):
        greedy = greedy_search(toy_step, [], states, max_len=8, no_repeat_ngram=size)[0]
        assert not repeats_an_ngram(greedy.ids, size), greedy.ids
        for hypothesis in ranked_search(toy_step, [], states, max_len=8, beam=4, n_best=4, no_repeat_ngram=size)[0]:
            assert not repeats_an_ngram(hypothesis.ids, size), hypothesis.ids
    assert greedy_search(toy_step, [], states, max_len=8, no_repeat_ngram=1)[0].ids == [A, B, END_ID]


class ToyTranslator(Translator):
    """A translator whose network is numpy: the first step's best token is <unk> (then </s>), and
    it attends to the source position ``focus``."""

    def __init__(self, focus: int, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer) -> None:
        super().__init__(source_tokenizer, target_tokenizer, max_len=5, length_penalty=1.0, memory_count=1)
        self.focus = focus

    def run_encoder(self, source_ids):
        return [np.zeros((*source_ids.shape, 2), np.float32), np.zeros((len(source_ids), 1), np.float32)]

    def run_step(self, inputs):
        tokens, memory, mask, state = inputs
        vocab = len(self.target_tokenizer.vocab)
        logits = np.full((len(tokens), vocab), -5.0)
        first = tokens[:, 0] == START_ID
        logits[first, OOV_ID], logits[first, A] = 5.0, 4.0  # <unk>, else the word "froid"
        logits[~first, END_ID] = 5.0
        attention = np.zeros(mask.shape, np.float32)
        attention[:, min(self.focus, mask.shape[1] - 1)] = 1.0
        return [logits, state + 1, attention]


def toy_tokenizers() -> tuple[Tokenizer, Tokenizer]:
    source = Tokenizer("word", lower=True).fit(["i am cold ."])
    target = Tokenizer("word").fit(["froid froid froid je suis"])
    assert target.vocab[A] == "froid"
    return source, target


@pytest.mark.parametrize("beam", [1, 3])
def test_replace_unk_copies_the_most_attended_source_token_as_written(beam):
    from seqapp.tasks.translate_decoding import Decoding

    source_tokenizer, target_tokenizer = toy_tokenizers()
    translator = ToyTranslator(1, source_tokenizer, target_tokenizer)
    plain = translator.decode_ranked(["I saw Xylophone"], Decoding(beam=beam))[0][0]
    assert translator.text(plain) == "froid"  # <unk> is never produced without the option
    copied = translator.decode_ranked(["I saw Xylophone"], Decoding(beam=beam, replace_unk=True))[0][0]
    assert copied.ids[0] == OOV_ID
    assert translator.text(copied) == ""  # without the source, <unk> still prints as nothing
    assert translator.text(copied, "I saw Xylophone") == "saw"
    far = ToyTranslator(2, source_tokenizer, target_tokenizer)
    copied = far.decode_ranked(["I saw Xylophone"], Decoding(beam=beam, replace_unk=True))[0][0]
    assert far.text(copied, "I saw Xylophone") == "Xylophone"  # the word outside the vocabulary, its case kept


# -- translate, on the session's tiny run ----------------------------------------------------
def predict_json(cli, run: Path, *args: str) -> list[dict]:
    result = cli("predict", "--run", run, "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


SOURCES = ["I am cold.", "hello", "She reads a book."]


@pytest.mark.parametrize("engine", ["litert", "tf"])
def test_n_best_returns_ranked_distinct_hypotheses_and_the_first_is_the_beam_output(cli, translate_run, engine):
    records = predict_json(cli, translate_run, "--engine", engine, "--n-best", "4", *SOURCES)
    beamed = predict_json(cli, translate_run, "--engine", engine, "--beam", "4", *SOURCES)
    for record, plain in zip(records, beamed):
        hypotheses = record["hypotheses"]
        assert len(hypotheses) == 4 and len({h["text"] for h in hypotheses}) == 4, hypotheses
        scores = [h["score"] for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert record["translation"] == hypotheses[0]["text"] == plain["translation"]
        assert record["beam"] == 4 and record["log_prob"] == plain["log_prob"]
        assert set(plain) == {"source", "translation", "log_prob", "beam"}  # N = 1: the shape it always had
    one = predict_json(cli, translate_run, "--engine", engine, "--n-best", "1", *SOURCES)
    greedy = predict_json(cli, translate_run, "--engine", engine, *SOURCES)
    assert one == greedy

    text = cli("predict", "--run", translate_run, "--engine", engine, "--n-best", "4", *SOURCES)
    assert text.exit_code == 0, text.output
    lines = [line.split("\t") for line in text.stdout.splitlines()]
    assert len(lines) == 4 * len(SOURCES) and all(len(line) == 2 for line in lines)
    for i, record in enumerate(records):
        group = lines[4 * i: 4 * i + 4]
        assert [text for _, text in group] == [h["text"] for h in record["hypotheses"]]
        assert [float(score) for score, _ in group] == pytest.approx([h["score"] for h in record["hypotheses"]],
                                                                     abs=1e-4)


def test_length_penalty_overrides_the_runs_and_max_len_caps_the_output(cli, translate_run, tiny_runs):
    run = tiny_runs("translate")
    assert run.config.model.length_penalty == 1.0
    target = Tokenizer.from_dict(run.preprocessing["target_tokenizer"])
    trained = predict_json(cli, translate_run, "--n-best", "3", *SOURCES)
    none = predict_json(cli, translate_run, "--n-best", "3", "--length-penalty", "0", *SOURCES)
    for record in none:
        for hypothesis in record["hypotheses"]:
            assert hypothesis["score"] == pytest.approx(hypothesis["log_prob"], abs=1e-4)
    divided = [h for record in trained for h in record["hypotheses"]]
    assert any(h["score"] > h["log_prob"] + 1e-3 for h in divided)  # the run's 1.0: log_prob / length

    for cap in (1, 2):
        for record in predict_json(cli, translate_run, "--n-best", "3", "--max-len", str(cap), *SOURCES):
            assert all(len(target.split(h["text"])) <= cap for h in record["hypotheses"]), record
    assert max(len(target.split(h["text"])) for h in divided) > 2  # so the cap did cut


@pytest.mark.parametrize("engine", ["litert", "tf"])
def test_no_repeat_ngram_holds_on_translations(cli, translate_run, tiny_runs, engine):
    target = Tokenizer.from_dict(tiny_runs("translate").preprocessing["target_tokenizer"])
    plain = predict_json(cli, translate_run, "--engine", engine, "--n-best", "3", *SOURCES)
    tokens = [target.split(h["text"]) for record in plain for h in record["hypotheses"]]
    assert any(repeats_an_ngram(t, 1) for t in tokens)  # the tiny model repeats words without the option
    for size in ("1", "2"):
        records = predict_json(cli, translate_run, "--engine", engine, "--n-best", "3", "--no-repeat-ngram", size,
                               *SOURCES)
        for record in records:
            for hypothesis in record["hypotheses"]:
                assert not repeats_an_ngram(target.split(hypothesis["text"]), int(size)), hypothesis


@pytest.mark.parametrize("engine", ["litert", "tf"])
def test_replace_unk_on_the_real_network_copies_a_word_outside_the_vocabulary(tiny_runs, engine):
    """<unk> made the first choice (its logit raised): the real attention picks the source token."""
    from seqapp.tasks.translate import make_translator
    from seqapp.tasks.translate_decoding import Decoding

    run = tiny_runs("translate")
    translator = make_translator(run, engine)  # not the run's cached one: this one is changed
    assert "xylophone" not in translator.source_tokenizer.index
    original = translator.run_step

    def unk_first(inputs):
        outputs = original(inputs)
        first = inputs[0][:, 0] == START_ID
        outputs[0] = np.array(outputs[0])
        outputs[0][first, OOV_ID] = outputs[0][first].max(axis=-1) + 20.0
        return outputs

    translator.run_step = unk_first
    for beam in (1, 3):
        plain = translator.decode_ranked(["Xylophone"], Decoding(beam=beam))[0][0]
        assert OOV_ID not in plain.ids and "Xylophone" not in translator.text(plain, "Xylophone")
        copied = translator.decode_ranked(["Xylophone", "I see a xylophone."],
                                          Decoding(beam=beam, replace_unk=True))
        alone, within = copied[0][0], copied[1][0]
        assert alone.ids[0] == OOV_ID and translator.text(alone, "Xylophone").startswith("Xylophone")
        source = translator.source_tokens("I see a xylophone.")
        attended = source[int(np.argmax(within.attention[0][: len(source)]))]
        assert within.ids[0] == OOV_ID and translator.text(within, "I see a xylophone.").startswith(attended)


@pytest.fixture(scope="module")
def unk_run(tmp_path_factory) -> Path:
    """A tiny translate run with 2 target words: most training targets are <unk>, so it says <unk>."""
    from seqapp.training import train

    out = tmp_path_factory.mktemp("unk")
    return train(tiny_config("translate", "data.max_vocab=6", epochs=2), out, verbose=0, log=lambda _: None).path


@pytest.mark.parametrize("engine", ["litert", "tf"])
def test_replace_unk_on_the_command_line(cli, unk_run, engine):
    plain = predict_json(cli, unk_run, "--engine", engine, "Xylophone")[0]
    copied = predict_json(cli, unk_run, "--engine", engine, "--replace-unk", "Xylophone")[0]
    assert "Xylophone" not in plain["translation"]
    assert "Xylophone" in copied["translation"], (plain, copied)
    words = copied["translation"].split()
    assert words.count("Xylophone") >= 1 and set(words) <= {"Xylophone", *plain["translation"].split(),
                                                             *Tokenizer.from_dict(json.loads(
                                                                 (unk_run / "preprocessing.json").read_text())
                                                                 ["target_tokenizer"]).vocab}


# -- textgen -----------------------------------------------------------------------------------
def generate(cli, run: Path, *args: str) -> str:
    result = cli("generate", "--run", run, "--seed", "hello", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("\n")
    return result.stdout[:-1]


@pytest.mark.parametrize("engine", ["litert", "tf"])
def test_stop_ends_the_text_right_after_the_stop_text(cli, tiny_runs, engine):
    run = tiny_runs("textgen").path
    options = ["--engine", engine, "--random-seed", "3", "-n", "120"]
    full = generate(cli, run, *options)
    generated = full[len("hello"):]
    stop = generated[40:42]
    end = generated.find(stop) + len(stop)
    assert generate(cli, run, *options, "--stop", stop) == "hello" + generated[:end]
    other = generated[20:22]
    first = min(end, generated.find(other) + len(other))
    assert generate(cli, run, *options, "--stop", stop, "--stop", other) == "hello" + generated[:first]
    assert generate(cli, run, *options, "--stop", "\x00never\x00") == full  # the same draws as without it
    predicted = cli("predict", "--run", run, "--random-seed", "3", "--stop", stop, "--engine", engine, "hello")
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stdout.startswith("hello") and predicted.stdout.rstrip("\n").endswith(stop)


def test_stop_cuts_each_sample_on_its_own(tiny_runs):
    from seqapp.tasks.textgen import generate_texts

    run = tiny_runs("textgen")
    free = generate_texts(run, "hello", length=80, num_samples=3, random_seed=5, engine="litert")
    stopped = generate_texts(run, "hello", length=80, num_samples=3, random_seed=5, engine="litert", stop="e")
    for whole, cut in zip(free, stopped):
        generated = whole[len("hello"):]
        expected = generated[:generated.find("e") + 1] if "e" in generated else generated
        assert cut == "hello" + expected


@pytest.mark.parametrize("engine", ["litert", "tf"])
def test_no_repeat_ngram_holds_on_generated_text(cli, tiny_runs, engine):
    run = tiny_runs("textgen").path
    greedy = generate(cli, run, "--engine", engine, "--temperature", "0", "-n", "150")[len("hello"):]
    assert repeats_an_ngram(list(greedy), 4)  # a tiny model's greedy text loops
    for size in (2, 4):
        text = generate(cli, run, "--engine", engine, "--temperature", "0", "-n", "150", "--no-repeat-ngram", str(size))
        generated = text[len("hello"):]
        assert text.startswith("hello") and len(generated) == 150
        assert not repeats_an_ngram(list(generated), size), generated
    sampled = generate(cli, run, "--engine", engine, "--random-seed", "2", "-n", "150", "--no-repeat-ngram", "3")
    assert not repeats_an_ngram(list(sampled[len("hello"):]), 3)
    # size 1: every character once; the sample ends when none is left
    vocab = len(json.loads((run / "preprocessing.json").read_text())["tokenizer"]["vocab"])
    once = generate(cli, run, "--engine", engine, "--temperature", "0", "-n", "300", "--no-repeat-ngram", "1")
    generated = once[len("hello"):]
    assert len(generated) == len(set(generated)) <= vocab - 4


def test_no_repeat_ngram_gives_the_same_greedy_text_on_both_engines(cli, tiny_runs):
    run = tiny_runs("textgen").path
    texts = {engine: generate(cli, run, "--engine", engine, "--temperature", "0", "-n", "80", "--no-repeat-ngram", "3")
             for engine in ("litert", "tf")}
    assert texts["litert"] == texts["tf"]


# -- export: the README says which options the graph holds -------------------------------------
@pytest.mark.parametrize("task, named", [("translate", "--n-best"), ("textgen", "--no-repeat-ngram")])
def test_the_export_notes_name_the_options_the_graph_does_not_hold(tiny_runs, task, named):
    from seqapp.tasks import get_task

    notes = " ".join(get_task(task)().serving_module(tiny_runs(task)).notes())
    assert named in notes and "not part of this signature" in notes


# -- bad input: one line, exit 2, nothing saved changed ----------------------------------------
# (arguments after the run, a fragment of the error line); {translate}, {textgen}, {sentiment}: run folders,
# {noattention}: a translate run trained without attention
CASES = [
    (["predict", "--run", "{translate}", "--n-best", "0", "hi"], "--n-best 0 must be at least 1"),
    (["predict", "--run", "{translate}", "--n-best", "-2", "hi"], "--n-best -2 must be at least 1"),
    (["predict", "--run", "{translate}", "--n-best", "5", "--beam", "2", "hi"], "needs a beam at least as wide"),
    (["predict", "--run", "{translate}", "--length-penalty", "-1", "hi"], "--length-penalty -1.0 must be from 0"),
    (["predict", "--run", "{translate}", "--length-penalty", "6", "hi"], "--length-penalty 6.0 must be from 0"),
    (["predict", "--run", "{translate}", "--length-penalty", "nan", "hi"], "--length-penalty nan must be from 0"),
    (["predict", "--run", "{translate}", "--max-len", "0", "hi"], "--max-len 0 must be at least 1"),
    (["predict", "--run", "{translate}", "--max-len", "1000", "hi"], "more than this run's max_len"),
    (["predict", "--run", "{translate}", "--no-repeat-ngram", "0", "hi"], "--no-repeat-ngram 0 must be at least 1"),
    (["predict", "--run", "{noattention}", "--replace-unk", "hi"], "--replace-unk needs a run trained with attention"),
    (["predict", "--run", "{sentiment}", "--replace-unk", "good"], "--replace-unk does not apply to a sentiment"),
    (["predict", "--run", "{sentiment}", "--n-best", "2", "good"], "--n-best does not apply to a sentiment"),
    (["predict", "--run", "{textgen}", "--no-repeat-ngram", "-1", "hi"], "--no-repeat-ngram -1 must be at least 1"),
    (["predict", "--run", "{textgen}", "--stop", "", "hi"], "--stop '' is empty"),
    (["predict", "--run", "{textgen}", "--max-len", "3", "hi"], "--max-len does not apply to a textgen"),
    (["generate", "--run", "{textgen}", "--stop", ""], "--stop '' is empty"),
    (["generate", "--run", "{textgen}", "--stop", "a", "--stop", ""], "--stop '' is empty"),
    (["generate", "--run", "{textgen}", "--no-repeat-ngram", "0"], "--no-repeat-ngram 0 must be at least 1"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_runs) -> dict[str, Path]:
    """Copies of the tiny translate, textgen and sentiment runs, and a translate run whose config
    says it has no attention (the check reads the config; no model is loaded)."""
    root = tmp_path_factory.mktemp("decoding-bad")
    runs = {name: copy_run(tiny_runs(name), root / "runs").path for name in ("translate", "textgen", "sentiment")}
    plain = root / "plain" / "translate" / runs["translate"].name
    shutil.copytree(runs["translate"], plain)
    config = plain / "config.yaml"
    text = config.read_text()
    assert "attention: bahdanau" in text
    config.write_text(text.replace("attention: bahdanau", "attention: none"))
    return {**runs, "noattention": plain, "root": root}


def filled(args: list[str], world: dict[str, Path]) -> list[str]:
    return [arg.format(**{name: str(path) for name, path in world.items()}) for arg in args]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(case[0][2:])[:50] for case in CASES])
def test_bad_decoding_options_are_one_line_exit_2_and_change_nothing(cli, world, tree_hash, args, fragment):
    before = tree_hash(world["root"])
    result = cli(*filled(args, world))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in one_error_line(result.stderr)
    assert tree_hash(world["root"]) == before


@pytest.mark.process
def test_bad_decoding_options_answer_before_tensorflow_is_imported(world, tmp_path):
    """In a process where importing TensorFlow or Keras fails, every case still gets its line."""
    answers = answers_without_tensorflow([filled(args, world) for args, _ in CASES], tmp_path)
    for (args, fragment), answer in zip(CASES, answers, strict=True):
        assert "was imported" not in answer, (args, answer)
        assert fragment in answer and "exit 2" in answer, (args, answer)


def test_every_option_has_help(cli):
    for command, flags in (("predict", ["--n-best", "--length-penalty", "--max-len", "--no-repeat-ngram",
                                        "--replace-unk", "--stop"]),
                           ("generate", ["--stop", "--no-repeat-ngram"])):
        result = cli(command, "--help")
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        for flag in flags:
            assert flag in text, (command, flag)
    assert "translate runs" in " ".join(cli("predict", "--help").stdout.split())


# -- seqapp serve ------------------------------------------------------------------------------
@pytest.mark.process
def test_serve_predict_takes_the_decoding_options_within_its_caps(translate_run):
    pytest.importorskip("fastapi")
    inputs = {"inputs": ["I am cold.", "hello"]}
    with serving(translate_run) as server:
        status, body = server.json("/predict", {**inputs, "options": {"n_best": 3, "length_penalty": 0.5,
                                                                      "no_repeat_ngram": 2, "max_len": 5,
                                                                      "replace_unk": True}})
        assert status == 200, body
        for output in body["outputs"]:
            hypotheses = output["hypotheses"]
            assert len(hypotheses) == 3 and output["translation"] == hypotheses[0]["text"]
            assert [h["score"] for h in hypotheses] == sorted((h["score"] for h in hypotheses), reverse=True)
        status, plain = server.json("/predict", inputs)
        assert status == 200 and "hypotheses" not in plain["outputs"][0]
        refused = [({"n_best": 17}, 'option "n_best" is 17; this server allows at most 16'),
                   ({"n_best": 4, "beam": 2}, "n_best 4 needs a beam at least as wide; give beam 4"),
                   ({"n_best": 0}, "n_best 0 must be at least 1"),
                   ({"length_penalty": 9}, "length_penalty 9.0 must be from 0"),
                   ({"max_len": 500}, "more than this run's max_len"),
                   ({"max_len": 5000}, "at most 1000 (seqapp serve --max-tokens)"),
                   ({"no_repeat_ngram": 0}, "no_repeat_ngram 0 must be at least 1"),
                   ({"replace_unk": "yes"}, 'option "replace_unk" must be true or false')]
        for options, fragment in refused:
            status, body = server.json("/predict", {**inputs, "options": options})
            assert status == 400 and fragment in body["error"], (options, body)
            assert "\n" not in body["error"]


@pytest.mark.process
def test_serve_generate_takes_stop_and_no_repeat_ngram(tiny_runs):
    pytest.importorskip("fastapi")
    run = tiny_runs("textgen").path
    with serving(run) as server:
        base = {"length": 120, "random_seed": 3}
        status, full = server.call("/generate", {"seed": "hello", "options": base})
        assert status == 200
        generated = full.decode()[len("hello"):]
        stop = generated[30:32]
        for given in (stop, [stop, "\x00never"]):
            status, cut = server.call("/generate", {"seed": "hello", "options": {**base, "stop": given}})
            assert status == 200 and cut.decode() == "hello" + generated[:generated.find(stop) + len(stop)]
        status, text = server.call("/generate", {"seed": "hello", "options": {"length": 100, "temperature": 0,
                                                                              "no_repeat_ngram": 3}})
        assert status == 200 and not repeats_an_ngram(list(text.decode()[len("hello"):]), 3)
        refused = [({"stop": ""}, "stop '' is empty"), ({"stop": 5}, 'option "stop" must be a text or a list'),
                   ({"stop": ["a"] * 17}, "at most 16"), ({"stop": [1]}, 'option "stop" must be a text or a list'),
                   ({"no_repeat_ngram": 0}, "no_repeat_ngram 0 must be at least 1"),
                   ({"no_repeat_ngram": 5000}, "at most 1000")]
        for options, fragment in refused:
            status, body = server.json("/generate", {"seed": "hello", "options": options})
            assert status == 400 and fragment in body["error"], (options, body)
