"""The translator on LiteRT: the same translations as TensorFlow, without importing it.

Random-weight runs (sharp logits, see test_translate.small_run) are exported directly, so
the parity tests cover attention none / Luong / Bahdanau and LSTM / GRU / bidirectional
encoders without training; the session's tiny trained run checks that training writes the
graphs and that ``seqapp predict`` answers from them in a process where TensorFlow cannot
load (a ``process`` test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_translate import PAIRS, small_run

from seqapp import litert
from seqapp.tasks import load_run
from seqapp.tasks.translate import Translate, make_translator
from seqapp.tasks.translate_model import LITERT_BATCH, LITERT_ENCODER, LITERT_STEP

LONG = "I am cold and she reads a book at the station, where we eat bread. " * 3  # 51 tokens, max_len is 20
SOURCES = [source for source, _ in PAIRS] + ["", "?!", "Zebras juggle quietly.", LONG, "hello"]
# more rows than one LiteRT batch (with beam 3: 4 batches), so filler rows are exercised
MANY = SOURCES + [f"{a} {b}" for a, _ in PAIRS[:4] for b, _ in PAIRS[4:]] + [source.upper() for source, _ in PAIRS]


@pytest.fixture
def trained_run(tiny_runs):
    """The task's tiny run, trained one epoch by the normal training path (which exports)."""
    return tiny_runs("translate")


def assert_same_hypotheses(expected, got):
    """Same ids, log-probabilities and attention (over the source positions both have: a batch
    padded wider has zero weight on the extra positions)."""
    assert [h.ids for h in got] == [h.ids for h in expected]
    np.testing.assert_allclose([h.log_prob for h in got], [h.log_prob for h in expected], atol=1e-4)
    for lite, keras in zip(got, expected):
        if keras.attention is None:
            assert lite.attention is None
            continue
        width = min(lite.attention.shape[1], keras.attention.shape[1])
        np.testing.assert_allclose(lite.attention[:, :width], keras.attention[:, :width], atol=1e-4)
        assert not lite.attention[:, width:].any() and not keras.attention[:, width:].any()


@pytest.mark.parametrize("overrides", [
    ["model.attention=none", "model.cell=gru", "model.layers=2"],
    ["model.attention=luong", "model.luong_score=general", "model.cell=lstm", "model.bidirectional=true"],
], ids=["none-gru-2layers", "luong-lstm-bidirectional"])
def test_litert_translations_equal_tensorflow(tmp_path, overrides):
    run = small_run(tmp_path, *overrides)
    Translate().export(run, tmp_path)
    assert litert.choose(tmp_path, LITERT_STEP, "auto") == "litert"
    keras, lite = make_translator(run, "tf"), make_translator(run, "litert")
    check_padding(keras, lite)
    assert len(MANY) * 3 > 3 * LITERT_BATCH and lite.has_attention == keras.has_attention
    for beam in (1, 3):
        expected = keras.decode_ids(MANY, beam=beam)
        assert len({tuple(h.ids) for h in expected}) > 3  # not one answer for everything
        assert_same_hypotheses(expected, lite.decode_ids(MANY, beam=beam))
    # other batch cuts: the source width is resized per batch, padding never changes a result
    expected, got = keras.decode_ids(SOURCES, beam=2), lite.decode_ids(SOURCES, beam=2, batch_size=5)
    assert [h.ids for h in got] == [h.ids for h in expected]
    spread = SOURCES.index("")  # nothing to attend to: its uniform weights spread over its batch's padding
    assert_same_hypotheses(expected[:spread] + expected[spread + 1:], got[:spread] + got[spread + 1:])
    assert lite.translate(SOURCES) == keras.translate(SOURCES)


def assert_same_lines(got: list[str], expected: list[str]) -> None:
    """The same ``--json`` answers (log_prob, rounded to 4 places, within one unit of rounding)."""
    got, expected = [json.loads(line) for line in got], [json.loads(line) for line in expected]
    assert [{**answer, "log_prob": 0} for answer in got] == [{**answer, "log_prob": 0} for answer in expected]
    assert [answer["log_prob"] for answer in got] == pytest.approx([answer["log_prob"] for answer in expected],
                                                                   abs=2e-4)


def check_padding(keras, lite):
    """Padding a source (to its batch's longest) changes neither memory nor states; the mask marks it."""
    ids = lite.source_ids(["hello", LONG, ""])
    (keras_context, keras_states), (context, states) = keras.encode(ids), lite.encode(ids)
    for ours, theirs in zip(context + states, keras_context + keras_states):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    alone_context, alone_states = lite.encode(lite.source_ids(["hello"]))
    for padded, single in zip(states, alone_states):
        np.testing.assert_allclose(padded[0], single[0], atol=1e-5)
    if lite.has_attention:
        np.testing.assert_allclose(context[0][0, :1], alone_context[0][0], atol=1e-5)  # "hello" is one token
        assert context[-1][0].tolist() == [True] + [False] * (ids.shape[1] - 1)  # the source mask


def test_training_writes_the_graphs_and_predict_uses_them(trained_run, tmp_path):
    manifest = litert.read_manifest(trained_run.path)
    assert manifest[LITERT_ENCODER]["inputs"] == ["source"]
    assert manifest[LITERT_STEP]["inputs"][:2] == ["tokens", "memory_0"]  # the tiny run has Bahdanau attention
    task = Translate()
    assert task.engine(trained_run, "auto") == "litert"
    plot = tmp_path / "attention.png"
    run = load_run(trained_run.path)
    lines = task.predict(run, SOURCES, beam=2, json=True, attention_plot=plot, engine="litert")
    assert run._model is None  # model.keras was never read
    assert_same_lines(lines, Translate().predict(load_run(trained_run.path), SOURCES, beam=2, json=True))
    assert plot.stat().st_size > 0


@pytest.mark.process
def test_predict_runs_without_tensorflow(trained_run, tmp_path):
    """In a process where importing TensorFlow or Keras fails, the default engine still answers."""
    poison = tmp_path / "poison"
    for module in ("tensorflow", "keras"):
        (poison / module).mkdir(parents=True)
        (poison / module / "__init__.py").write_text(f"raise ImportError('{module} was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(poison)}
    inputs = ["I am cold.", "hello", LONG]
    args = [sys.executable, "-m", "seqapp", "predict", "--run", str(trained_run.path), "--json", "--beam", "3",
            "--attention-plot", str(tmp_path / "a.png"), *inputs]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = Translate().predict(load_run(trained_run.path), inputs, beam=3, json=True, engine="tf")
    assert_same_lines(done.stdout.splitlines(), expected)
    assert [json.loads(line)["beam"] for line in expected] == [3, 3, 3]
    assert "was imported" not in done.stderr and (tmp_path / "a.png").stat().st_size > 0


def test_a_run_without_graphs_falls_back_to_tensorflow(trained_run, tmp_path, cli):
    bare = tmp_path / "bare"
    shutil.copytree(trained_run.path, bare)
    shutil.rmtree(bare / litert.FOLDER)
    assert Translate().engine(load_run(bare), "auto") == "tf"
    result = cli("predict", "--run", bare, "--engine", "litert", "I am cold.")
    assert result.exit_code == 2 and "has no LiteRT translate_step graph" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("predict", "--run", bare, "I am cold.")
    assert result.exit_code == 0, result.output
    assert result.stdout == cli("predict", "--run", trained_run.path, "I am cold.").stdout
