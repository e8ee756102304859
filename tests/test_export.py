"""``seqapp export``: the exported graphs give seqapp's own answers, in a process without seqapp.

Tiny runs of every exportable task (the session's tiny runs; for the fresh process, a textgen
run trained a little longer, a word-level language model and, in one test, a differenced
bidirectional forecaster) are exported with the CLI once, and loaded in one fresh Python
process that imports only TensorFlow (seqapp cannot be imported there): those tests are
``process`` tests. Its answers must equal ``seqapp predict`` / ``generate`` on the
same raw inputs: labels, tags and text exactly, probabilities and forecasts within 1e-5. The
in-graph tokenizers are compared with the Python ones on tricky texts, the LiteRT exports
with Keras, and every refusal is one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import without_seqapp

from seqapp import litert, runs
from seqapp.tasks import REGISTRY, load_config, load_run

LONG = " ".join(["the film was great but the ending was far too long and slow"] * 4)
TEXTS = ["works great, love it", "The BATTERY died after a day!!", "", "zxqv blorf UNKNOWNWORDS ?!", LONG]
SENTENCES = ["I saw her duck .", "The cat sat on the mat.", "", "I DIDN'T see Dr. Smith's zxqvblorf, did you?",
             "Supercalifragilisticexpialidocious words (hyphen-ated) cost $3.50 in the U.S. at 9:30.",
             " ".join(["the cat sat on the mat and"] * 9)]
SEEDS = [("hello", 0.0, 1), ("", 0.0, 1), ("HELLO Ωmega ### " + "the sea is wild " * 8, 0.0, 2),
         ("the ", 0.8, 1), ("the ", 0.8, 2), ("ANNA: ÀB", 0.8, 3)]
WORD_SEEDS = [("Hello there", 0.0, 1), ("the boat isn't", 0.8, 4), ("(zxqv) ZXQV!", 0.8, 5)]
LENGTH = 60
HORIZON = 7
CORPUS = "".join(f"ANNA:\nhello there, the boat isn't {word}.\n\nBEN:\n(hello) anna's sea is {word}!\n\n"
                 for word in ("blue", "calm", "grey", "wild", "cold", "warm") * 8)

# The fresh process: seqapp is blocked, only TensorFlow loads the exports and answers.
CHILD = r'''
import json, sys
try:
    import seqapp
    importable = True
except ModuleNotFoundError:
    importable = False
import tensorflow as tf

def decode(value):
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value.decode("utf-8") if isinstance(value, bytes) else value

def plain(tensor):
    value = tensor.numpy()
    return decode(value.tolist() if hasattr(value, "tolist") else value)

answers = {}
for name, job in json.load(sys.stdin).items():
    serve = tf.saved_model.load(job["path"]).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    answers[name] = []
    for request in job["requests"]:
        try:
            outputs = serve(**{key: tf.constant(value, specs[key].dtype) for key, value in request.items()})
            answers[name].append({key: plain(value) for key, value in outputs.items()})
        except tf.errors.InvalidArgumentError as error:
            answers[name].append({"error": error.message})
print(json.dumps({"answers": answers, "seqapp_importable": importable,
                  "seqapp_loaded": any(m.split(".")[0] == "seqapp" for m in sys.modules)}))
'''


def train(name: str, root: Path, settings: list[str] | None = None, epochs: int = 1, **extra) -> runs.Run:
    """A tiny run of ``name`` (a task or template), as the shared suite trains them."""
    from seqapp.training import train as train_run

    task = REGISTRY[load_config(name).task]
    cfg = load_config(name, [*task.tiny.get("set", []), *(settings or [])], {"train.epochs": epochs}, **extra)
    return train_run(cfg, root / "runs", name=name, verbose=0, log=lambda _: None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_runs):
    """The session's tiny runs, the sine and sentiment ones exported with the CLI to
    ``root/exports/<name>`` (the fresh process's tests export the others): ``(root, trained)``."""
    root = tmp_path_factory.mktemp("export")
    trained = {name: tiny_runs(name) for name in ("textgen", "sine", "sentiment", "tagging")}
    export_all(root, {name: trained[name] for name in ("sine", "sentiment")})
    return root, trained


@pytest.fixture(scope="module")
def world(exported):
    """Every export and the fresh process's answers to the same inputs: ``(root, trained, answers)``.
    The language models here read CORPUS: a textgen run trained long enough that its greedy text is
    not all spaces, and a word-level one (neither converts to LiteRT: no test here reads that)."""
    root, trained = exported
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    textgen = train("textgen", root, ["train.learning_rate=0.02", "data.stride=5", "train.jit_compile=false",
                                      "train.litert=false"], epochs=3, data_file=corpus)
    words = train("textgen-words", root, ["model.units=16", "model.embedding_dim=8", "data.seq_len=10",
                                          "data.stride=2", "train.litert=false"], epochs=2, data_file=corpus)
    trained = {**trained, "textgen": textgen, "words": words}
    export_all(root, {name: trained[name] for name in ("textgen", "tagging", "words")})
    return root, trained, ask_fresh_process(root, requests_by_export(trained))


def export_all(root: Path, trained: dict) -> None:
    """Export each run with the CLI, as ``root/exports/<name>``."""
    from typer.testing import CliRunner

    from seqapp.cli import app

    for name, run in trained.items():
        result = CliRunner().invoke(app, ["export", "--run", str(run.path), "--to", str(root / "exports"),
                                          "--name", name])
        assert result.exit_code == 0, result.output


def ask_fresh_process(root: Path, requests: dict[str, list[dict]]) -> dict:
    """Send ``requests`` to the exports under ``root/exports`` in one fresh process that cannot
    import seqapp; return its answers."""
    jobs = {name: {"path": str(root / "exports" / name.split(":")[0] / "1"), "requests": asked}
            for name, asked in requests.items()}
    done = without_seqapp(CHILD, input=json.dumps(jobs), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def requests_by_export(trained: dict) -> dict[str, list[dict]]:
    """The raw requests sent to each export."""
    history = sine_histories(trained["sine"])
    return {"sentiment": [{"texts": TEXTS}, {"texts": [""]}],
            "tagging": [{"texts": SENTENCES}, {"texts": [""]}],
            "textgen": [{"seed": s, "length": LENGTH, "temperature": t, "random_seed": r} for s, t, r in SEEDS],
            "words": [{"seed": s, "length": 30, "temperature": t, "random_seed": r} for s, t, r in WORD_SEEDS],
            "sine": [{"history": history.tolist(), "horizon": HORIZON},
                     {"history": history[:1, -10:].tolist(), "horizon": 1}],
            "sine:errors": [{"history": [[0.5] * 9], "horizon": 3}, {"history": history.tolist(), "horizon": 0}],
            "words:errors": [{"seed": " \t ", "length": 5, "temperature": 0.0, "random_seed": 1},
                             {"seed": "hello", "length": -1, "temperature": 0.0, "random_seed": 1},
                             {"seed": "hello", "length": 5, "temperature": -0.5, "random_seed": 1},
                             {"seed": "hello", "length": 5, "temperature": 1e35, "random_seed": 1}]}


def sine_histories(run: runs.Run) -> np.ndarray:
    """Two series: the run's own series 1 and a fresh wave (``predict --random-seed 5``)."""
    from seqapp.tasks.regression import forecast_history

    return np.stack([forecast_history(run, HORIZON, seed)[0] for seed in (None, 5)])


@pytest.mark.process
def test_the_fresh_process_has_no_seqapp(world):
    _, _, child = world
    assert child["seqapp_importable"] is False and child["seqapp_loaded"] is False


@pytest.mark.process
def test_sentiment_export_gives_predict_labels_and_probabilities(world, cli):
    from seqapp.tasks.sentiment import class_probabilities

    _, trained, child = world
    run = trained["sentiment"]
    answer = child["answers"]["sentiment"][0]
    expected = class_probabilities(run, TEXTS)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5, rtol=0)
    assert answer["labels"] == [run.preprocessing["classes"][i] for i in expected.argmax(axis=1)]
    shown = cli("predict", "--run", run.path, "--json", "--engine", "tf", *TEXTS)
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line)["label"] for line in shown.stdout.splitlines()] == answer["labels"]
    assert child["answers"]["sentiment"][1]["labels"] == answer["labels"][2:3]  # the empty text, alone
    print(f"\nsentiment: {answer['labels']} {np.round(answer['probabilities'], 4).tolist()}")


@pytest.mark.process
def test_tagging_export_gives_predict_tokens_and_tags(world, cli):
    _, trained, child = world
    answer = child["answers"]["tagging"][0]
    shown = cli("predict", "--run", trained["tagging"].path, "--json", *SENTENCES)
    assert shown.exit_code == 0, shown.output
    expected = [json.loads(line) for line in shown.stdout.splitlines()]
    assert answer["lengths"] == [len(line["tokens"]) for line in expected]
    for row, line in enumerate(expected):
        length = answer["lengths"][row]
        assert answer["tokens"][row][:length] == line["tokens"] and answer["tags"][row][:length] == line["tags"]
        assert set(answer["tags"][row][length:]) <= {""}
    assert child["answers"]["tagging"][1] == {"lengths": [0], "tokens": [[""]], "tags": [[""]]}
    print("\ntagging: " + " ".join(f"{t}/{g}" for t, g in zip(answer["tokens"][3], answer["tags"][3]) if t))


@pytest.mark.process
@pytest.mark.parametrize("name,seeds,length", [("textgen", SEEDS, LENGTH), ("words", WORD_SEEDS, 30)])
def test_textgen_export_gives_the_generated_text(world, cli, name, seeds, length):
    """Greedy and sampled text equal the Keras path's (``generate --engine tf``) for the same random seed."""
    from seqapp.tasks.textgen import generate_texts

    _, trained, child = world
    run = load_run(trained[name].path)
    for (seed, temperature, random_seed), answer in zip(seeds, child["answers"][name]):
        expected = generate_texts(run, seed, length=length, temperature=temperature, random_seed=random_seed,
                                  engine="tf")[0]
        assert answer["text"] == expected, (seed, temperature)
    seed, temperature, random_seed = seeds[-1]
    shown = cli("generate", "--run", run.path, "--seed", seed, "--length", length, "--temperature", temperature,
                "--random-seed", random_seed, "--engine", "tf")
    assert shown.exit_code == 0 and shown.stdout == child["answers"][name][-1]["text"] + "\n", shown.output
    print(f"\n{name}: {child['answers'][name][0]['text'][:80]!r}")


@pytest.mark.process
def test_sine_export_gives_the_forecast(world):
    from seqapp.tasks.regression import forecast

    _, trained, child = world
    run = trained["sine"]
    histories = sine_histories(run)
    answer = child["answers"]["sine"][0]["forecast"]
    np.testing.assert_allclose(answer, [forecast(run, history, HORIZON) for history in histories], atol=1e-5, rtol=0)
    short = child["answers"]["sine"][1]["forecast"]  # a history of exactly one window
    np.testing.assert_allclose(short, [forecast(run, histories[0][-10:], 1)], atol=1e-5, rtol=0)
    print(f"\nsine: {np.round(answer[0], 5).tolist()}")


@pytest.mark.process
def test_differenced_bidirectional_forecast(tmp_path):
    """Differences and a bidirectional model (which re-reads its window) forecast as ``predict`` does."""
    from seqapp.tasks.regression import forecast

    run = train("sine", tmp_path, ["data.difference=true", "data.horizon=3", "model.bidirectional=true"])
    histories = sine_histories(run)
    export_all(tmp_path, {"differenced": run})
    child = ask_fresh_process(tmp_path, {"differenced": [{"history": histories.tolist(), "horizon": HORIZON}]})
    answer = child["answers"]["differenced"][0]["forecast"]
    np.testing.assert_allclose(answer, [forecast(run, history, HORIZON) for history in histories], atol=1e-5, rtol=0)
    assert child["seqapp_importable"] is False


@pytest.mark.process
def test_bad_requests_fail_with_the_graphs_own_message(world):
    """Impossible requests are refused by assertions in the graph (TF Serving returns their message)."""
    _, _, child = world
    answers = child["answers"]["sine:errors"] + child["answers"]["words:errors"]
    expected = ["history needs at least 10 values", "horizon must be at least 1", "the seed has no tokens",
                "length must be >= 0", "temperature must be >= 0", "temperature must be 0 (greedy) or from 1e-30"]
    assert len(answers) == len(expected)
    for answer, fragment in zip(answers, expected):
        assert fragment in answer.get("error", ""), answer


@pytest.mark.process
def test_sine_export_matches_predict_output(world, cli):
    _, trained, child = world
    shown = cli("predict", "--run", trained["sine"].path, "--horizon", HORIZON, "--json")
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)["forecast"]  # 6 significant digits
    np.testing.assert_allclose(child["answers"]["sine"][0]["forecast"][0], printed, atol=1e-5, rtol=0)


def test_export_layout_assets_and_readme(exported):
    root, _ = exported
    folder = root / "exports" / "sentiment"
    assert sorted(path.name for path in folder.iterdir()) == ["1", "README.md"]
    assert (folder / "1" / "saved_model.pb").is_file() and (folder / "1" / "variables").is_dir()
    labels = json.loads((folder / "1" / "assets" / "labels.json").read_text(encoding="utf-8"))
    assert labels == ["negative", "positive"]
    assert (folder / "1" / "assets" / "vocabulary.json").is_file()
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "POST http://localhost:8501/v1/models/sentiment:predict" in readme
    assert '"signature_name": "serving_default"' in readme and "`texts`: `string[N]`" in readme
    assert (root / "exports" / "sine" / "1" / "assets" / "normalisation.json").is_file()


@pytest.mark.parametrize("name", ["sentiment", "sine", "textgen", "tagging"])
def test_litert_export_gives_keras_answers(exported, cli, name):
    """The .tflite, fed the ids / normalised values its README describes, answers as Keras does."""
    root, trained = exported
    run = trained[name]
    result = cli("export", "--run", run.path, "--to", root / "lite", "--format", "litert")
    assert result.exit_code == 0, result.output
    folder = root / "lite" / run.task / "1"
    signature = json.loads((folder / "signature.json").read_text(encoding="utf-8"))
    graph = litert.Graph(folder / "model.tflite", [tensor["name"] for tensor in signature["outputs"]])
    LITERT_CHECKS[name](run, graph)
    assert "model.tflite" in (root / "lite" / run.task / "README.md").read_text(encoding="utf-8")


def check_sentiment_litert(run: runs.Run, graph: litert.Graph) -> None:
    from seqapp.tasks.sentiment import class_probabilities
    from seqapp.text import OOV_ID, Tokenizer

    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    for text, expected in zip(TEXTS, class_probabilities(run, TEXTS)):
        ids = tokenizer.encode(text)[:run.preprocessing["max_len"]] or [OOV_ID]
        got = graph({"tokens": np.asarray([ids], np.int32)})[0][0]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def check_sine_litert(run: runs.Run, graph: litert.Graph) -> None:
    from seqapp.tasks.regression import forecast
    from seqapp.tasks.series_data import from_model, model_values

    history = sine_histories(run)[0]
    states = [np.zeros((1, run.config.model.units), np.float32) for _ in graph.outputs[1:]]
    values = model_values(history, run.preprocessing)[-run.preprocessing["window"]:]
    chunks = []
    for _ in range(HORIZON):
        chunk, *states = graph({"values": values[None, :, None], **{f"state_{i}": s for i, s in enumerate(states)}})
        chunks.append(chunk[0])
        values = chunk[0]
    got = from_model(np.concatenate(chunks)[None, :HORIZON], run.preprocessing, history[-1:])[0]
    np.testing.assert_allclose(got, forecast(run, history, HORIZON), atol=1e-5, rtol=0)


def check_textgen_litert(run: runs.Run, graph: litert.Graph) -> None:
    from seqapp.tasks.textgen import generate_texts
    from seqapp.text import Tokenizer

    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    ids, states, text = tokenizer.encode("hello"), [np.zeros((1, 16), np.float32)] * 2, "hello"
    for _ in range(30):
        logits, *states = graph({"tokens": np.asarray([ids], np.int32), "state_0": states[0], "state_1": states[1]})
        logits[0, :4] = -np.inf
        ids = [int(np.argmax(logits[0]))]
        text += tokenizer.vocab[ids[0]]
    assert text == generate_texts(run, "hello", length=30, temperature=0, random_seed=1, engine="tf")[0]


def check_tagging_litert(run: runs.Run, graph: litert.Graph) -> None:
    from seqapp.tasks.tagging import predict_tags
    from seqapp.tasks.tagging_data import Encoder, split_tokens

    token_lists = [split_tokens(text) for text in SENTENCES if text]
    for tokens, expected in zip(token_lists, predict_tags(run, token_lists)):
        features = {key: value[None] for key, value in Encoder(run.preprocessing).features(tokens).items()}
        probabilities = graph(features)[0][0]
        assert [run.preprocessing["tags"][i] for i in probabilities.argmax(axis=-1)] == expected


LITERT_CHECKS = {"sentiment": check_sentiment_litert, "sine": check_sine_litert, "textgen": check_textgen_litert,
                 "tagging": check_tagging_litert}


# -- calibrated runs: the temperature is in the graphs ----------------------------------------


def calibrated_copy(run: runs.Run, into: Path, temperature: float) -> runs.Run:
    """A copy of ``run`` at ``temperature``, as training with ``train.calibrate`` leaves it."""
    from conftest import copy_run

    from seqapp import files

    copy = copy_run(run, into)
    prep = json.loads((copy.path / "preprocessing.json").read_text(encoding="utf-8"))
    files.write_json(copy.path / "preprocessing.json", {**prep, "calibration": {"temperature": temperature}})
    return load_run(copy.path)


def test_calibrated_sentiment_exports_give_predict_probabilities(exported, cli, tmp_path):
    """SavedModel and LiteRT exports of a calibrated run divide the logits by its temperature, as predict does."""
    import tensorflow as tf

    from seqapp.tasks.sentiment import class_probabilities

    _, trained = exported
    run = calibrated_copy(trained["sentiment"], tmp_path / "runs", 2.5)
    expected = class_probabilities(run, TEXTS)
    assert np.abs(expected - class_probabilities(trained["sentiment"], TEXTS)).max() > 1e-4  # the temperature shows
    for fmt in ("saved_model", "litert"):
        result = cli("export", "--run", run.path, "--to", tmp_path / fmt, "--format", fmt)
        assert result.exit_code == 0, result.output
    readme = (tmp_path / "saved_model" / "sentiment" / "README.md").read_text(encoding="utf-8")
    assert "divided by the temperature 2.5" in readme
    serve = tf.saved_model.load(str(tmp_path / "saved_model" / "sentiment" / "1")).signatures["serving_default"]
    answer = serve(texts=tf.constant(TEXTS))
    np.testing.assert_allclose(answer["probabilities"].numpy(), expected, atol=1e-5, rtol=0)
    shown = cli("predict", "--run", run.path, "--json", "--engine", "tf", *TEXTS)
    assert [label.decode() for label in answer["labels"].numpy()] == [
        json.loads(line)["label"] for line in shown.stdout.splitlines()]
    graph = litert.Graph(tmp_path / "litert" / "sentiment" / "1" / "model.tflite")
    check_sentiment_litert(run, graph)  # probabilities within 1e-5 of class_probabilities, temperature included
    assert "divided by the temperature 2.5" in (tmp_path / "litert" / "sentiment" / "README.md").read_text("utf-8")


def test_calibrated_tagging_litert_export_scales_the_probabilities_and_keeps_the_tags(exported, cli, tmp_path):
    from seqapp.tasks.tagging import tag_probabilities
    from seqapp.tasks.tagging_data import Encoder, split_tokens

    _, trained = exported
    run = calibrated_copy(trained["tagging"], tmp_path / "runs", 0.4)
    result = cli("export", "--run", run.path, "--to", tmp_path / "litert", "--format", "litert")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "litert" / "tagging" / "1"
    signature = json.loads((folder / "signature.json").read_text(encoding="utf-8"))
    graph = litert.Graph(folder / "model.tflite", [tensor["name"] for tensor in signature["outputs"]])
    token_lists = [split_tokens(text) for text in SENTENCES if text]
    plain = tag_probabilities(trained["tagging"], token_lists)
    for tokens, expected, before in zip(token_lists, tag_probabilities(run, token_lists), plain):
        features = {key: value[None] for key, value in Encoder(run.preprocessing).features(tokens).items()}
        np.testing.assert_allclose(graph(features)[0][0], expected, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(expected.argmax(axis=-1), before.argmax(axis=-1))
    assert max(np.abs(new - old).max() for new, old in zip(tag_probabilities(run, token_lists), plain)) > 1e-3
    assert "divided by the temperature 0.4" in (tmp_path / "litert" / "tagging" / "README.md").read_text("utf-8")


# -- refusals: one line, exit 2, nothing written -----------------------------------------


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def damaged(exported, tmp_path):
    """A copy of the sentiment run with a broken model file."""
    import shutil

    _, trained = exported
    broken = tmp_path / "runs" / "sentiment" / "20990101-000000"
    shutil.copytree(trained["sentiment"].path, broken)
    (broken / "model.keras").write_bytes(b"not a zip file")
    return broken


@pytest.mark.parametrize("args,fragment", [
    (["--run", "{sentiment}"], "already exists; choose another version with --version 2"),
    (["--run", "{sentiment}", "--format", "onnx"], "--format 'onnx' is not known"),
    (["--run", "{broken}", "--name", "other"], "cannot be loaded as a Keras model"),
    (["--run", "{sentiment}", "--version", "0"], "--version 0 must be at least 1"),
    (["--run", "{sentiment}", "--name", "../up"], "cannot be part of a folder name"),
    (["--run", "{sentiment}", "--version", str(2**63)], "is too large; TensorFlow Serving reads versions as 64-bit"),
    # a LiteRT version beside the SavedModel one: TF Serving could not load the model any more
    (["--run", "{sentiment}", "--format", "litert", "--version", "7"], "holds saved_model versions (1)"),
])
def test_refusals_are_one_line_and_change_nothing(exported, damaged, cli, tree_hash, args, fragment):
    root, trained = exported
    paths = {"sentiment": trained["sentiment"].path, "broken": damaged}
    args = [arg.format(**{key: str(value) for key, value in paths.items()}) for arg in args]
    before = tree_hash(root / "exports")
    assert fragment in error_line(cli("export", *args, "--to", root / "exports"))
    assert tree_hash(root / "exports") == before


def test_a_format_the_task_cannot_export_is_refused(exported, cli, monkeypatch, tree_hash):
    from seqapp.tasks.sentiment_serving import SentimentServing

    root, trained = exported
    monkeypatch.setattr(SentimentServing, "unsupported", {"litert": "its graph has no builtin form"})
    before = tree_hash(root)
    line = error_line(cli("export", "--run", trained["sentiment"].path, "--to", root / "elsewhere",
                          "--format", "litert"))
    assert "cannot be exported as litert: its graph has no builtin form; use --format saved_model" in line
    assert tree_hash(root) == before and not (root / "elsewhere").exists()


def test_another_version_is_written_beside_the_first(exported, cli):
    root, trained = exported
    result = cli("export", "--run", trained["sine"].path, "--to", root / "exports", "--version", "2")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (root / "exports" / "sine").iterdir()) == ["1", "2", "README.md"]


# -- the in-graph tokenizers ---------------------------------------------------------------

TRICKY = ["Hello, World!", "I didn't know; it's JOHN'S car.", "", "  \n\nA\tb  ", "Ünïcödé façade — «quoted» … ¿qué?",
          "rock'n'roll o’clock don’t", "Mr. Smith met Dr.Jones in the U.S.A. at 9:30, paid $3.50 or 1,000.",
          "can't won't DIDN'T n't nn't 'sa 's's's I'd we'll they're you've I'M", "e-mail x_y __init__ 3.5n't 1.2.3",
          "naïve café 東京 ١٢٣ ½ ⅷ e\u0301", "emoji 😀 ok!!", "tab\there\x0bvt\x1cfs\x85nel\xa0nbsp\u2028ls",
          "ALL CAPS ΣΊΣΥΦΟΣ İstanbul", "it’s’s don't't", "a.b.n't U.S.'s", "'", "''", "'s", "n't", "Prof.X St. ms.",
          "nul\x00and\x01marks\x02\x03"]
CONTROLS = dict.fromkeys(range(4), "\ufffd")  # the separator and markers text_graph reads as U+FFFD


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Texts mixing the pieces the tokenizers treat specially."""
    import random
    import string

    rng = random.Random(seed)
    pieces = list(string.printable) + list("’‘“”«»¡¿…éÉßİΣς東١½\u0301\xa0\u2028\x85") + [
        "n't", "N’T", "'s", "'LL", "'re", "Mr.", "Dr.", "U.S.", "3.5", "1,000"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(count)]


@pytest.mark.parametrize("level", ["char", "word"])
def test_in_graph_tokenizer_splits_as_the_python_one(level):
    import tensorflow as tf

    from seqapp import text_graph
    from seqapp.text import Tokenizer

    texts = TRICKY + random_texts(500)
    for lower in (False, True):
        for strip_punctuation in (False, True):
            tokenizer = Tokenizer(level, lower=lower, strip_punctuation=strip_punctuation)
            got = text_graph.tokenizer_tokens(tf.constant(texts), tokenizer.to_dict()).to_list()
            for text, tokens in zip(texts, got):
                expected = tokenizer.split(text.translate(CONTROLS))
                assert [token.decode() for token in tokens] == expected, (text, lower, strip_punctuation)


def test_in_graph_treebank_splitter_splits_as_tagging():
    import tensorflow as tf

    from seqapp import text_graph
    from seqapp.tasks.tagging_data import split_tokens

    texts = TRICKY + random_texts(500, seed=1)
    got = text_graph.treebank_tokens(tf.constant(texts)).to_list()
    for text, tokens in zip(texts, got):
        expected = split_tokens(text.translate(CONTROLS))
        assert [token.decode() for token in tokens] == expected, text


def test_character_classes_are_pythons():
    """Whitespace and the stripped punctuation are exactly Python's sets (RE2's own are ASCII)."""
    import re

    import tensorflow as tf

    from seqapp import text_graph
    from seqapp.text import PUNCTUATION_PATTERN

    chars = [chr(code) for code in range(0x3001)]
    strings = tf.constant([char.encode("utf-8", "surrogatepass") for char in chars])
    spaces = tf.strings.regex_full_match(strings, f"[{text_graph.SPACE_CLASS}]").numpy()
    assert [char for char, space in zip(chars, spaces) if space] == [char for char in chars if char.isspace()]
    marks = tf.strings.regex_full_match(strings, text_graph.punctuation_re2()).numpy()
    assert [char for char, mark in zip(chars, marks) if mark] == [char for char in chars
                                                                  if PUNCTUATION_PATTERN.fullmatch(char)]
    assert re.fullmatch(r"\w", "_") and tf.strings.regex_full_match("_", f"[{text_graph.WORD}]").numpy()


def test_exported_models_never_use_cudnn_kernels(exported):
    """A graph traced with cuDNN kernels (on a GPU machine) would serve on GPUs only."""
    from seqapp.layers import is_recurrent
    from seqapp.serving import portable

    _, trained = exported
    model = portable(load_run(trained["tagging"].path).model)  # bidirectional LSTMs
    recurrent = [inner for layer in model.layers if is_recurrent(layer)
                 for inner in (layer.forward_layer, layer.backward_layer)]
    assert recurrent and all(layer.use_cudnn is False for layer in recurrent)
