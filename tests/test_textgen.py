"""Text generation: windows, splits, stateful decoding, sampling, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from seqapp import sampling
from seqapp.runs import Run
from seqapp.tasks import load_config
from seqapp.tasks.textgen import TextGen, generate_texts, language_model, split_by_position, step_function, windows
from seqapp.text import Tokenizer


def test_windows_shift_targets_by_one():
    ids = np.arange(10, dtype=np.int32)
    x, y = windows(ids, seq_len=4, stride=3)
    assert x.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert y.tolist() == [[1, 2, 3, 4], [4, 5, 6, 7]]


def test_short_text_gives_one_short_window_or_none():
    x, y = windows(np.arange(3, dtype=np.int32), seq_len=10, stride=1)
    assert x.tolist() == [[0, 1]] and y.tolist() == [[1, 2]]
    assert len(windows(np.arange(1, dtype=np.int32), 10, 1)[0]) == 0


def test_split_by_position_has_no_overlap():
    text = "".join(f"line {i}\n" for i in range(1000))
    splits = split_by_position(text, 0.1, 0.1)
    assert splits.train + splits.val + splits.test == text
    assert text.index(splits.val) > len(splits.train) - 1
    assert 0.08 < len(splits.test) / len(text) < 0.12
    assert splits.train.endswith("\n") and splits.val.endswith("\n")


@pytest.fixture(params=["lstm", "gru", "simplernn"])
def random_run(request, tmp_path):
    """An untrained two-layer model in a Run, enough to compare decoding paths."""
    cfg = load_config("textgen", [f"model.cell={request.param}", "model.units=12", "model.layers=2",
                                  "model.embedding_dim=6"])
    tokenizer = Tokenizer("char").fit(["abcdefgh hello"])
    prep = {"tokenizer": tokenizer.to_dict(), "seq_len": 8, "default_seed": "a"}
    model = language_model(tokenizer.vocab_size, cfg.model)
    return Run(path=tmp_path, config=cfg, preprocessing=prep, _model=model)


def test_stateful_steps_equal_full_window_recomputation(random_run):
    ids = np.array([[5, 7, 9, 4, 6, 8, 10, 11]], np.int32)
    full_logits = random_run.model(ids, training=False).numpy()[0]
    step = step_function(random_run)
    # Seed fed at once, then one token at a time with the state carried.
    logits, states = step(ids[:, :3], step.zero_states(1))
    np.testing.assert_allclose(logits[0], full_logits[2], atol=1e-4)
    for t in range(3, ids.shape[1]):
        logits, states = step(ids[:, t:t + 1], states)
        np.testing.assert_allclose(logits[0], full_logits[t], atol=1e-4)


def test_batch_samples_are_independent_and_greedy_is_deterministic(random_run):
    greedy = generate_texts(random_run, "ab", length=15, temperature=0, num_samples=3)
    assert len(set(greedy)) == 1 and greedy[0].startswith("ab")
    sampled = generate_texts(random_run, "ab", length=30, temperature=1.5, num_samples=4, random_seed=3)
    assert len(set(sampled)) > 1
    again = generate_texts(random_run, "ab", length=30, temperature=1.5, num_samples=4, random_seed=3)
    assert sampled == again


def test_second_generation_reuses_the_compiled_sampler(random_run):
    first = generate_texts(random_run, "ab", length=12, temperature=0.8, random_seed=1)
    step = step_function(random_run)
    (sampler,) = step._samplers.values()
    traced = sampler.experimental_get_tracing_count()
    assert generate_texts(random_run, "ab", length=12, temperature=0.8, random_seed=1) == first
    assert step_function(random_run) is step and list(step._samplers.values()) == [sampler]
    assert sampler.experimental_get_tracing_count() == traced == 1


def test_generation_never_emits_special_tokens(random_run):
    text = generate_texts(random_run, "a", length=200, temperature=3.0, random_seed=0)[0]
    assert "<" not in text


def test_unknown_seed_characters_warn_then_generate(random_run, caplog):
    with caplog.at_level("WARNING", logger="seqapp"):
        text = generate_texts(random_run, "héllo", length=5, temperature=0)[0]
    assert text.startswith("héllo") and len(text) == len("héllo") + 5
    warnings = [record.getMessage() for record in caplog.records if record.name == "seqapp"]
    assert len(warnings) == 1 and "'é'" in warnings[0]


def draws(logits, **options):
    """2,000 draws from one row of logits, with the given sampling options."""
    batch = np.repeat(np.log(np.array([logits])), 2000, axis=0)
    return sampling.sample(batch, seed=[0, 1], **options).numpy()


def test_sampling_options():
    probs = [0.1, 0.2, 0.3, 0.4]
    assert (draws(probs, temperature=0) == 3).all()
    assert (draws(probs, top_k=1) == 3).all()
    assert set(draws(probs, top_k=2)) == {2, 3}
    assert set(draws(probs, top_p=0.5)) == {2, 3}  # 0.4 + 0.3 reaches 0.5
    assert set(draws(probs, top_p=0.35)) == {3}  # 0.4 alone reaches 0.35 (no test on the 0.4 boundary)
    assert set(draws(probs, top_p=0.4)) == {3}  # a float32 sum of 0.39999998 counts as reaching 0.4
    assert set(draws(probs, top_p=1e-9)) == {3}  # the most likely token is always kept
    assert abs((draws(probs) == 0).mean() - 0.1) < 0.03
    assert (draws(probs, temperature=0.2) == 3).mean() > 0.7
    assert 0 not in draws([0.97, 0.01, 0.01, 0.01], banned=[0], temperature=5)
    assert (draws(probs) == draws(probs)).all()  # same seed, same draws


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (-1, None, None), (float("inf"), None, None), (float("nan"), None, None),
    (1, 0, None), (1, None, 0.0), (1, None, 1.5), (1, None, float("nan")),
])
def test_bad_sampling_options(temperature, top_k, top_p):
    from seqapp.errors import SeqappError

    with pytest.raises(SeqappError):
        sampling.check_options(temperature, top_k, top_p)


def test_trained_model_beats_unigram_baseline(corpus, tmp_path):
    from seqapp.training import train

    cfg = load_config("textgen", ["model.units=64", "data.seq_len=40", "train.epochs=6",
                                  "train.jit_compile=false", "train.litert=false"],  # XLA's compiling: 2/3 of the time
                      {"data.path": str(corpus)})
    run = train(cfg, tmp_path / "runs", verbose=0, log=lambda _: None)
    metrics = run.metrics
    assert metrics["test"]["loss"] < metrics["baseline_unigram"]["test"]["loss"] - 0.3
    assert metrics["test"]["bits_per_char"] == pytest.approx(metrics["test"]["loss"] / np.log(2), rel=1e-3)
    assert (run.path / "plots" / "learning_curves.png").exists()
    leftovers = {"training-state.npz", "draft.json", ".lock", ".training-state.npz.tmp"}
    assert not leftovers & {path.name for path in run.path.iterdir()}  # a published run holds no draft files
    assert TextGen().headline(metrics).startswith("test loss")


@pytest.mark.parametrize("template", ["textgen-hello", "textgen-words"])
def test_classic_templates_train_and_generate(template, corpus, tmp_path):
    from seqapp.training import train

    values = {"train.epochs": 2} if template == "textgen-words" else {"train.epochs": 60}  # memorised from 25 on
    values["train.litert"] = False  # generate answers on tf; test_litert checks the LiteRT graphs
    if template == "textgen-words":
        values["data.path"] = str(corpus)
    run = train(load_config(template, values=values), tmp_path, verbose=0, log=lambda _: None)
    text = generate_texts(run, "hello", length=12, temperature=0)[0]
    assert text.startswith("hello")
    if template == "textgen-hello":
        # the tiny classic memorises its one sentence
        assert text.startswith("hello world, how")


@pytest.mark.slow
def test_tiny_shakespeare_three_epochs_beats_unigram_and_writes_play_text(shared_data, tmp_path):
    import re

    from seqapp.training import train

    path = shared_data / "tinyshakespeare" / "input.txt"
    cfg = load_config("textgen", values={"data.path": str(path), "train.epochs": 3})
    run = train(cfg, tmp_path, verbose=2, log=print)
    test, baseline = run.metrics["test"]["loss"], run.metrics["baseline_unigram"]["test"]["loss"]
    print(f"test loss {test:.3f} nats/char vs unigram {baseline:.3f}")
    assert test < baseline - 1.0
    samples = generate_texts(run, "ROMEO:", length=400, temperature=0.8, top_k=20, random_seed=0, num_samples=4)
    speakers = [re.search(r"\n[A-Z][A-Za-z ]+:\n", sample) for sample in samples]  # a name on its own line
    assert sum(found is not None for found in speakers) >= 2, samples  # 400 characters may all be one speech


def test_default_seed_is_a_line_break_or_the_most_frequent_token():
    from seqapp.tasks.textgen import default_seed

    lines = Tokenizer("char").fit(["ab\nb"])
    assert default_seed(lines, np.bincount(lines.encode_array("ab\nb"), minlength=lines.vocab_size)) == "\n"
    flat = Tokenizer("char").fit(["abbbc"])
    assert default_seed(flat, np.bincount(flat.encode_array("abbbc"), minlength=flat.vocab_size)) == "b"


def test_the_embedding_starts_from_unit_normal_vectors():
    """Keras's default (uniform +-0.05) would feed the recurrent layer near-zero inputs at first."""
    import keras

    keras.utils.set_random_seed(0)
    weights = language_model(200, load_config("textgen").model).get_layer("embedding").get_weights()[0]
    assert weights.shape == (200, 64)
    assert abs(weights.mean()) < 0.05 and 0.9 < weights.std() < 1.1
