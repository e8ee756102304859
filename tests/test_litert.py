"""The LiteRT engine: the same answers as Keras, without importing TensorFlow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import CORPUS, tiny_config

from seqapp import litert, sampling
from seqapp.tasks import load_config, load_run
from seqapp.tasks.textgen import generate_texts


@pytest.fixture(scope="module")
def textgen_run(tmp_path_factory):
    """A small textgen run trained long enough that its greedy text is not one repeated character."""
    from seqapp.training import train

    root = tmp_path_factory.mktemp("litert")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog ate the log. a bird in the hand.\n" * 40, encoding="utf-8")
    cfg = load_config("textgen", ["model.units=32", "model.embedding_dim=8", "data.seq_len=30", "train.epochs=6",
                                  "model.layers=2", "model.cell=gru", "train.batch_size=8", "train.learning_rate=0.01",
                                  "train.patience=0", "train.jit_compile=false"],  # XLA's compiling took 3/4 of it
                      data_file=corpus)
    return train(cfg, root / "runs", verbose=0, log=lambda _: None)


def test_training_saves_a_checked_step_graph(textgen_run):
    manifest = litert.read_manifest(textgen_run.path)
    assert manifest["step"]["inputs"] == ["tokens", "state_0", "state_1"]
    assert len(manifest["step"]["outputs"]) == 3
    assert litert.choose(textgen_run.path, "step", "auto") == "litert"


@pytest.mark.parametrize("options", [
    {"temperature": 0},
    {"temperature": 0.8, "top_k": 1},
    {"temperature": 1.0, "top_p": 1e-6},
])
def test_litert_text_is_the_keras_text(textgen_run, options):
    """Greedy decoding (and sampling reduced to one candidate) gives the same text on both engines."""
    run = load_run(textgen_run.path)
    keras_text = generate_texts(run, "the ", length=120, random_seed=3, engine="tf", **options)[0]
    lite_text = generate_texts(run, "the ", length=120, random_seed=3, engine="litert", **options)[0]
    assert lite_text == keras_text
    assert len(set(lite_text[4:])) > 3  # a real text, not one character over and over


def test_several_samples_and_a_fixed_random_seed(textgen_run):
    run = load_run(textgen_run.path)
    first = generate_texts(run, "a", length=60, num_samples=3, random_seed=7, engine="litert")
    again = generate_texts(run, "a", length=60, num_samples=3, random_seed=7, engine="litert")
    assert first == again and len(first) == 3 and all(len(text) == 61 for text in first)
    assert len(set(first)) > 1  # three independent samples


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.9),
                                                       (0.5, 10, 0.5), (0, None, None)])
def test_numpy_filter_masks_what_the_tensorflow_filter_masks(temperature, top_k, top_p):
    logits = np.random.default_rng(1).normal(0, 3, (4, 50)).astype(np.float32)
    ours = sampling.filter_logits_numpy(logits, temperature, top_k, top_p, banned=(0, 1))
    theirs = np.asarray(sampling.filter_logits(logits, temperature, top_k, top_p, banned=(0, 1)))
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    finite = ~np.isinf(ours)
    assert np.allclose(ours[finite], theirs[finite], rtol=1e-6)


@pytest.mark.process
def test_generate_runs_without_tensorflow(textgen_run, tmp_path):
    """In a process where importing TensorFlow fails, the default engine still answers.

    pydantic is poisoned too: typer 0.29 imports it for every command (0.2-0.3 s of each
    answer), which is why pyproject.toml keeps typer below 0.29.
    """
    poison = tmp_path / "poison"
    for module in ("tensorflow", "keras", "pydantic"):
        (poison / module).mkdir(parents=True)
        (poison / module / "__init__.py").write_text(f"raise ImportError('{module} was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(poison)}
    args = [sys.executable, "-m", "seqapp", "generate", "--seed", "the ", "--length", "50", "--temperature", "0",
            "--run", str(textgen_run.path)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = generate_texts(load_run(textgen_run.path), "the ", length=50, temperature=0, engine="tf")[0]
    assert done.stdout == expected + "\n"
    assert done.stderr == ""  # the interpreter's start-up note is not shown


def test_engine_choice_and_its_errors(textgen_run, tmp_path, cli):
    bare = tmp_path / "bare"
    shutil.copytree(textgen_run.path, bare)
    shutil.rmtree(bare / litert.FOLDER)
    assert litert.choose(bare, "step", "auto") == "tf"
    result = cli("generate", "--run", bare, "--engine", "litert", "--length", "5")
    assert result.exit_code == 2 and "has no LiteRT step graph" in result.stderr
    result = cli("generate", "--run", textgen_run.path, "--engine", "fast", "--length", "5")
    assert result.exit_code == 2 and "--engine 'fast' is not known" in result.stderr
    (bare / litert.FOLDER).mkdir()
    (bare / litert.FOLDER / "step.tflite").write_bytes(b"garbage")
    (bare / litert.FOLDER / litert.MANIFEST).write_text('{"step": {"inputs": ["tokens"], "outputs": ["x"]}}')
    result = cli("generate", "--run", bare, "--length", "5")
    assert result.exit_code == 2 and "cannot be loaded" in result.stderr and "--engine tf" in result.stderr


def test_sentiment_litert_probabilities_match_keras(tiny_runs):
    from seqapp.tasks.sentiment import Sentiment, class_probabilities

    task = Sentiment()
    run = tiny_runs("sentiment")  # its tiny settings, one epoch
    assert task.engine(run, "auto") == "litert"
    texts = ["great", "", "the battery died after a day " * 20, *(f"review number {i}, fine" for i in range(40))]
    keras_probs = class_probabilities(load_run(run.path), texts, engine="tf")
    lite_probs = class_probabilities(load_run(run.path), texts, engine="litert")
    assert lite_probs.shape == keras_probs.shape == (len(texts), 2)
    assert np.max(np.abs(lite_probs - keras_probs)) < 1e-5
    lines = list(task.predict(load_run(run.path), texts[:2], engine="litert"))
    classes = run.preprocessing["classes"]
    assert [line.split()[0] for line in lines] == [classes[int(i)] for i in lite_probs[:2].argmax(1)]


def test_a_run_trained_without_litert_has_no_graphs_and_answers_on_tensorflow(tmp_path, cli):
    """``train.litert=false`` skips the conversion: no ``litert/`` folder, and ``generate`` and
    ``predict`` answer on the tf engine, by default and when asked for it."""
    from seqapp.tasks.textgen import TextGen
    from seqapp.training import train

    cfg = tiny_config("textgen", "train.litert=false", "train.jit_compile=false",
                      values={"data.text": CORPUS})  # 14 batches, not the bundled corpus's 136
    assert cfg.train.litert is False
    run = train(cfg, tmp_path, verbose=0, log=lambda _: None)
    assert not (run.path / litert.FOLDER).exists()
    assert TextGen().engine(run, "auto") == "tf"
    args = ["generate", "--seed", "hello", "--length", "20", "--run", run.path, "--random-seed", "1"]
    default, on_tf = cli(*args), cli(*args, "--engine", "tf")
    assert default.exit_code == 0 and on_tf.exit_code == 0, default.output + on_tf.output
    assert default.stdout == on_tf.stdout and default.stdout.startswith("hello")
    predicted = cli("predict", "hello", "BEN:", "--run", run.path, "--random-seed", "1")
    assert predicted.exit_code == 0 and predicted.stdout.startswith("hello"), predicted.output
    for command in (args, ["predict", "hello", "--run", run.path]):
        refused = cli(*command, "--engine", "litert")
        assert refused.exit_code == 2 and "has no LiteRT step graph" in refused.stderr
