"""Tools around runs: provenance, ``train --like``, ``train --from``, ``runs --compare`` and
``runs --delete`` / ``--keep-last``.

The session's tiny sentiment run (``tiny_runs``) is the run these tools read; what a test
changes is a copy (``copy_run``). Two trainings are made here, each in seconds: the tiny run
again with ``train --like`` (its metrics must come out exactly the same) and a fine-tuned one
with ``train --from``. Bad input of every new option is at the end, in a table: one line, exit
2, nothing under the runs folder changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, answers_without_tensorflow, copy_run

from seqapp import drafts, provenance, runs
from seqapp.tasks import load_run

OLD_RUNS = Path(__file__).resolve().parent / "fixtures" / "runs-0.1.0"
VERSIONS = ("seqapp", "python", "tensorflow", "keras", "numpy")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "; " in lines[0], lines[0]
    return lines[0]


def succeeded(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_sentences(path: Path, word: str = "zorblax", label: str | None = None) -> Path:
    """The bundled sentiment data with ``word`` in place of every "the" (and every 7th label ``label``)."""
    rows = [line.split("\t") for line in (ROOT / "data" / "sentiment.tsv").read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(f"{text.replace('the', word)}\t{label if label and i % 7 == 0 else tag}\n"
                            for i, (text, tag) in enumerate(rows[:240])), encoding="utf-8")
    return path


# -- provenance ----------------------------------------------------------------------------------
def test_a_run_records_versions_command_and_the_data_it_read(sentiment_run):
    saved = json.loads((sentiment_run / provenance.FILE).read_text(encoding="utf-8"))
    assert set(VERSIONS) <= set(saved["versions"]) and all(saved["versions"][name] for name in VERSIONS)
    import keras
    import numpy
    import tensorflow

    assert saved["versions"]["tensorflow"] == tensorflow.__version__ and saved["versions"]["keras"] == keras.__version__
    assert saved["versions"]["numpy"] == numpy.__version__
    assert saved["command"].endswith(" ".join(sys.argv[1:])) and saved["cwd"] == os.getcwd()  # this process's
    assert saved["like"] is None and saved["from"] is None
    (data,) = saved["data"]  # the bundled sentiment data, read through seqapp.datafiles
    bundled = ROOT / "data" / "sentiment.tsv"
    assert data["bundled"] == "sentiment.tsv" and data["bytes"] == bundled.stat().st_size
    assert data["sha256"] == sha256(bundled)
    assert not (sentiment_run / drafts.INFO_FILE).exists()  # the draft's own record is gone, its content kept


def test_runs_json_shows_the_provenance_and_the_devices_of_distribute_json(cli, sentiment_run, tmp_path):
    out = tmp_path / "runs"
    copy_run(sentiment_run, out)
    (row,) = json.loads(succeeded(cli("runs", "--out", out, "--json")))
    shown = row["provenance"]
    saved = json.loads((sentiment_run / provenance.FILE).read_text(encoding="utf-8"))
    assert {key: shown[key] for key in ("versions", "command", "cwd", "data")} == \
        {key: saved[key] for key in ("versions", "command", "cwd", "data")}
    assert shown["devices"] == json.loads((sentiment_run / "distribute.json").read_text(encoding="utf-8"))
    assert "devices" not in saved  # kept once, in distribute.json


def test_translate_metrics_carry_sacrebleus_signatures(cli, tiny_runs, tmp_path):
    import sacrebleu

    run = tiny_runs("translate")
    signatures = run.metrics["signatures"]
    for name in ("bleu", "chrf"):
        assert signatures[name].startswith("nrefs:") and f"version:{sacrebleu.__version__}" in signatures[name]
    assert "tok:13a" in signatures["bleu"]
    copy_run(run, tmp_path / "runs")
    (row,) = json.loads(succeeded(cli("runs", "--out", tmp_path / "runs", "--json")))
    assert row["provenance"]["metric_signatures"] == signatures


def test_old_runs_list_with_null_provenance_and_their_devices(cli, tmp_path):
    shutil.copytree(OLD_RUNS, tmp_path / "old")
    rows = json.loads(succeeded(cli("runs", "--out", tmp_path / "old", "--json")))
    assert len(rows) == 5
    for row in rows:
        shown = row["provenance"]
        assert shown["versions"] is None and shown["command"] is None and shown["data"] is None
        assert shown["devices"]["devices"] == ["/device:CPU:0"]


def test_a_damaged_provenance_is_a_warning_and_the_run_is_still_listed(cli, sentiment_run, tmp_path):
    run = copy_run(sentiment_run, tmp_path / "runs")
    (run.path / provenance.FILE).write_text('{"versions": 3}', encoding="utf-8")
    result = cli("runs", "--out", tmp_path / "runs", "--json")
    (row,) = json.loads(succeeded(result))
    assert row["provenance"]["versions"] is None and "provenance.json field 'versions'" in result.stderr


def test_publishing_keeps_what_the_draft_recorded(tmp_path):
    """draft.json goes at publishing; the seqapp version it recorded stays, in provenance.json."""
    from conftest import tiny_config

    draft = drafts.start(tmp_path / "runs", tiny_config("sine"), "kept", {"like": "/somewhere/else"})
    info = json.loads((draft.path / drafts.INFO_FILE).read_text(encoding="utf-8"))
    final = drafts.publish(draft, [{"path": "/d.csv", "bytes": 3, "sha256": "ab", "bundled": None}])
    draft.unlock()
    saved = json.loads((final / provenance.FILE).read_text(encoding="utf-8"))
    assert not (final / drafts.INFO_FILE).exists()
    assert saved["versions"] == info["versions"] and saved["versions"]["seqapp"] == info["seqapp"]
    assert saved["like"] == "/somewhere/else" and saved["data"][0]["path"] == "/d.csv"
    assert saved["started"] == info["started"] and "finished_with" not in saved


def test_serve_info_shows_no_provenance(tiny_runs):
    """/info is for clients: the versions, command line, working folder and data files stay out."""
    pytest.importorskip("fastapi")
    from seqapp.serve_service import Limits, Service
    from seqapp.tasks import get_task

    run = tiny_runs("translate")
    service = Service(run, get_task(run.task)(), "litert", Limits(max_inputs=8, max_chars=100, max_tokens=50),
                      batching=False, wait_s=0.0, max_batch=1)
    try:
        for paths in (False, True):
            text = json.dumps(service.info(paths))
            saved = json.loads((run.path / provenance.FILE).read_text(encoding="utf-8"))
            assert "provenance" not in text and saved["data"][0]["sha256"] not in text
            assert saved["command"] not in text and f'"{saved["cwd"]}"' not in text
            assert saved["versions"]["tensorflow"] not in json.dumps(service.info(paths).get("config"))
    finally:
        service.worker.executor.shutdown()


# -- train --like ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repeated(tiny_runs, tmp_path_factory):
    """``seqapp train --like`` of the tiny sentiment run: (the run, the repeat)."""
    from typer.testing import CliRunner

    from seqapp.cli import app

    base = tiny_runs("sentiment")
    out = tmp_path_factory.mktemp("like") / "runs"
    result = CliRunner().invoke(app, ["train", "--like", str(base.path), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    (path,) = (out / "sentiment").glob("2*")
    return base, load_run(path)


def test_train_like_repeats_a_run_exactly(repeated):
    base, again = repeated
    assert again.metrics == base.metrics  # same settings, data and seed: the same figures, to the last digit
    assert (again.path / "history.csv").read_text() == (base.path / "history.csv").read_text()
    assert again.config.to_dict() == base.config.to_dict()
    saved = json.loads((again.path / provenance.FILE).read_text(encoding="utf-8"))
    assert saved["like"] == os.path.abspath(base.path) and saved["command"].endswith(" ".join(sys.argv[1:]))
    assert saved["data"] == json.loads((base.path / provenance.FILE).read_text(encoding="utf-8"))["data"]


def test_train_like_refuses_changed_data_unless_told(sentiment_run, tmp_path, caplog):
    data = tmp_path / "reviews.tsv"
    data.write_text("a fine day\tpositive\n", encoding="utf-8")
    run = copy_run(sentiment_run, tmp_path / "runs")
    record = json.loads((run.path / provenance.FILE).read_text(encoding="utf-8"))
    record["data"] = [provenance.file_entry(data, data.stat().st_size, sha256(data))]
    (run.path / provenance.FILE).write_text(json.dumps(record), encoding="utf-8")
    provenance.check_data(run.path, allow_changed=False)  # unchanged: nothing to say
    data.write_text("a fine day\tnegative\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"reviews.tsv has changed \(now 20 bytes.*--allow-changed-data"):
        provenance.check_data(run.path, allow_changed=False)
    with caplog.at_level("WARNING", logger="seqapp"):
        provenance.check_data(run.path, allow_changed=True)
    assert "on data that differs now" in caplog.text
    data.unlink()
    with pytest.raises(Exception, match="reviews.tsv cannot be read now"):
        provenance.check_data(run.path, allow_changed=False)


def test_train_like_an_old_run_says_its_data_cannot_be_checked(caplog):
    with caplog.at_level("WARNING", logger="seqapp"):
        provenance.check_data(OLD_RUNS / "sine" / "20261206-230602-old", allow_changed=False)
    assert "records no data files" in caplog.text and "cannot be checked" in caplog.text


# -- train --from ---------------------------------------------------------------------------------
def test_train_from_fine_tunes_on_new_data_and_leaves_the_run_untouched(cli, sentiment_run, tmp_path, tree_hash):
    before = tree_hash(sentiment_run)
    data = new_sentences(tmp_path / "new.tsv")
    out = tmp_path / "runs"
    # a learning rate so small that the weights stay where they started: those of the run
    result = cli("train", "--from", sentiment_run, "--data", data, "--out", out, "-q",
                 "--set", "train.learning_rate=1e-9", "--random-seed", "5")
    succeeded(result)
    assert tree_hash(sentiment_run) == before
    (path,) = (out / "sentiment").glob("2*")
    base, tuned = load_run(sentiment_run), load_run(path)
    assert tuned.preprocessing == base.preprocessing  # the vocabulary, classes and lengths of the run
    assert tuned.config.data.path == str(data) and tuned.config.model == base.config.model
    assert tuned.config.train.learning_rate == 1e-9 and tuned.config.train.random_seed == 5
    for mine, theirs in zip(tuned.model.get_weights(), base.model.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
    saved = json.loads((path / provenance.FILE).read_text(encoding="utf-8"))
    assert saved["from"] == os.path.abspath(sentiment_run) and saved["data"][0]["sha256"] == sha256(data)
    (line,) = [line for line in result.stderr.splitlines() if "read as <unk>" in line]
    assert line.startswith("warning: starting from") and "'zorblax'" in line
    unknown = [word for word in tuned.preprocessing["tokenizer"]["vocab"] if word == "zorblax"]
    assert unknown == [] and " of " in line


@pytest.mark.process  # interrupts trainings
def test_an_interrupted_fine_tuning_resumes_with_the_runs_preprocessing(sentiment_run, tmp_path, monkeypatch):
    from seqapp import faults, training
    from seqapp.tasks import load_config

    data = new_sentences(tmp_path / "new.tsv")
    cfg = load_config(str(sentiment_run / "config.yaml"), [], {"train.epochs": 2}, data_file=data)
    base = os.path.abspath(sentiment_run)
    monkeypatch.setenv("SEQAPP_FAULT", "batch@2:INT")  # Ctrl-C after the 2nd batch: the state is saved
    faults._passes.clear()
    with pytest.raises(drafts.Interrupted) as stopped:
        training.train(cfg, tmp_path / "runs", verbose=0, log=lambda _: None, origin={"from": base})
    monkeypatch.delenv("SEQAPP_FAULT")
    assert stopped.value.draft is not None
    run = training.resume(stopped.value.draft, tmp_path / "runs", verbose=0, log=lambda _: None)
    assert run.preprocessing == load_run(sentiment_run).preprocessing
    saved = json.loads((run.path / provenance.FILE).read_text(encoding="utf-8"))
    assert saved["from"] == base and saved["data"][0]["path"] == str(data)


def test_the_unknown_word_report_counts_against_the_runs_vocabularies(caplog):
    from seqapp import finetune

    kept = {"tokenizer": {"level": "word", "vocab": ["<pad>", "<unk>", "<s>", "</s>", "a", "b"]},
            "word_vocab": ["<pad>", "<unk>", "<s>", "</s>", "x"], "classes": ["neg", "pos"], "max_len": 5}
    fitted = {"tokenizer": {"level": "word", "vocab": ["<pad>", "<unk>", "<s>", "</s>", "a", "c", "d"]},
              "word_vocab": ["<pad>", "<unk>", "<s>", "</s>", "x"], "classes": ["neg"], "max_len": 9}
    assert set(finetune.vocabularies(kept)) == {"tokenizer", "word_vocab"}
    assert finetune.label_sets(kept) == {"classes": ["neg", "pos"]}
    with caplog.at_level("INFO", logger="seqapp"):
        finetune.report_unknown(Path("RUN"), kept, fitted)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().endswith("tokenizer 2 of 3 ('c', 'd'); word_vocab 0 of 1")
    assert finetune.tokenizer_changes(kept["tokenizer"], {**fitted["tokenizer"], "lower": True}) == \
        ["lower: False -> True"]


# -- runs --compare -------------------------------------------------------------------------------
def test_compare_shows_the_settings_that_differ_and_the_headlines(cli, repeated, tmp_path):
    base, again = repeated
    other = copy_run(base, tmp_path / "runs")
    config = other.path / "config.yaml"
    config.write_text(config.read_text().replace("units: 8", "units: 9"), encoding="utf-8")
    text = succeeded(cli("runs", "--compare", base.path, again.path, other.path, "--plot", tmp_path / "c.png"))
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert lines["run"].split()[1:] == [base.path.name, again.path.name, str(other.path)] or \
        lines["run"].split()[1:] == [str(base.path), str(again.path), str(other.path)]
    assert lines["model.units"].split()[1:] == ["8", "8", "9"]
    assert lines["like"].split()[2:] == ["-", os.path.abspath(base.path), "-"]
    assert "accuracy" in lines["headline"] and lines["epochs"].split()[1:] == ["1", "1", "1"]
    assert "train.learning_rate" not in lines and "data.path" not in lines  # the same in all three
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    found = json.loads(succeeded(cli("runs", "--compare", base.path, other.path, "--json")))
    assert found["settings"] == {"model.units": [8, 9]}
    assert [row["metrics"] for row in found["runs"]] == [base.metrics, other.metrics]
    assert found["runs"][0]["history"]["loss"] == runs.read_history(base.path)["loss"]
    same = succeeded(cli("runs", "--compare", base.path, base.path))
    assert "settings" in same and "the same" in same


def test_compare_reads_old_runs(cli):
    text = succeeded(cli("runs", "--compare", OLD_RUNS / "textgen" / "20261206-230551-old",
                         OLD_RUNS / "sine" / "20261206-230602-old"))
    assert "task" in text and "textgen" in text and "sine" in text


# -- runs --delete, --keep-last --------------------------------------------------------------------
def named_copies(run: Path, out: Path, names: list[str]) -> list[Path]:
    copies = []
    for name in names:
        target = out / "sentiment" / name
        shutil.copytree(run, target)
        copies.append(target)
    return copies


def test_delete_removes_the_runs_named_and_nothing_else(cli, sentiment_run, tmp_path):
    out = tmp_path / "runs"
    first, second, third = named_copies(sentiment_run, out, ["20260101-000000", "20260102-000000", "20260103-000000"])
    stranger = out / "sentiment" / "20260104-000000"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    text = succeeded(cli("runs", "--delete", first, third, "--yes"))
    assert text.splitlines() == [f"removed {first}", f"removed {third}"]
    assert not first.exists() and not third.exists() and second.exists() and stranger.exists()
    assert not list((out / "sentiment").glob(".*"))  # no hidden leftovers


def test_keep_last_keeps_the_newest_of_each_task(cli, sentiment_run, tiny_runs, tmp_path):
    out = tmp_path / "runs"
    sentiment = named_copies(sentiment_run, out, ["20260101-000000", "20260102-000000-a", "20260103-000000"])
    translate = copy_run(tiny_runs("translate"), out).path
    draft = drafts.start(out, load_run(sentiment_run).config, None)
    draft.unlock()
    text = succeeded(cli("runs", "--keep-last", "2", "--out", out, "--yes"))
    assert text.splitlines() == [f"removed {sentiment[0]}"]
    assert sentiment[1].exists() and sentiment[2].exists() and translate.exists() and draft.path.exists()
    assert "no runs to delete" in succeeded(cli("runs", "--keep-last", "2", "--out", out, "--yes"))
    succeeded(cli("runs", "--keep-last", "1", "--out", out, "--task", "translate", "--yes"))
    assert sentiment[1].exists() and translate.exists()


@pytest.mark.process
def test_delete_asks_on_a_terminal(sentiment_run, tmp_path):
    """On a terminal --delete lists the runs and asks; only 'y' deletes."""
    import pty

    out = tmp_path / "runs"
    (run,) = named_copies(sentiment_run, out, ["20260101-000000"])
    for answer, kept in (("n", True), ("y", False)):
        leader, follower = pty.openpty()
        process = subprocess.Popen([sys.executable, "-m", "seqapp", "runs", "--delete", str(run)], stdin=follower,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(follower)
        os.write(leader, f"{answer}\n".encode())
        stdout, stderr = process.communicate(timeout=120)
        os.close(leader)
        assert process.returncode == 0, stderr
        assert str(run) in stdout and "delete these 1 run(s)?" in stdout
        assert run.exists() == kept
        assert ("nothing was removed" in stdout) == kept


# -- bad input: one line, exit 2, nothing under the runs folder changed --------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_runs) -> Path:
    """A runs folder with a copy of the tiny sentiment run and one whose recorded data file changed
    since, a draft, a link to a run, a damaged run, and data files (new words; a new label)."""
    root = tmp_path_factory.mktemp("run-tools-bad")
    out, files = root / "runs", root / "files"
    files.mkdir()
    senti = copy_run(tiny_runs("sentiment"), out).path
    changed = out / "sentiment" / "20260101-000000-changed"
    shutil.copytree(senti, changed)
    data = files / "data.tsv"
    data.write_text("first version\tpositive\n", encoding="utf-8")
    record = json.loads((changed / provenance.FILE).read_text(encoding="utf-8"))
    record["data"] = [provenance.file_entry(data, data.stat().st_size, sha256(data))]
    (changed / provenance.FILE).write_text(json.dumps(record), encoding="utf-8")
    data.write_text("second version\tpositive\n", encoding="utf-8")
    draft = drafts.start(out, load_run(senti).config, None)
    draft.unlock()
    os.symlink(senti, root / "link")
    damaged = root / "damaged" / "sentiment" / senti.name
    shutil.copytree(senti, damaged)
    (damaged / "preprocessing.json").write_text("{oops")
    new_sentences(files / "new.tsv")
    new_sentences(files / "newlabel.tsv", label="neutral")
    (files / "folder").mkdir()
    return root


# (arguments, a fragment of the error line, answered before TensorFlow starts?)
# {out}: the runs folder, {senti}: the copy of the tiny sentiment run, {changed}: a run whose data changed,
# {draft}: a draft, {link}: a link to {senti}, {damaged}: a run with a broken preprocessing.json,
# {files}: data files, {tmp}: a scratch folder
CASES = [
    # train --like
    (["train", "--like", "{tmp}/missing"], "does not exist", True),
    (["train", "--like", "{files}/folder"], "is not a seqapp run", True),
    (["train", "--like", "{damaged}"], "preprocessing.json cannot be read", True),
    (["train", "--like", "{senti}", "--data", "{files}/new.tsv"], "drop --data", True),
    (["train", "textgen", "--like", "{senti}"], "a sentiment run, not a textgen one", True),
    (["train", "sentiment", "--like", "{senti}"], "drop 'sentiment'", True),
    (["train", "--like", "{senti}", "--from", "{senti}"], "choose one", True),
    (["train", "--like", "{changed}", "--out", "{out}"], "data.tsv has changed", True),
    (["train", "--like", "{senti}", "--set", "model.units=abc"], "expected an integer", True),
    (["train", "--like", "{senti}", "--name", "a/b"], "--name 'a/b'", True),
    (["train", "--allow-changed-data", "sentiment"], "--allow-changed-data goes with --like", True),
    (["train", "--resume", "--like", "{senti}"], "drop --like", True),
    # train --from
    (["train", "--from", "{senti}"], "add --data FILE", True),
    (["train", "--from", "{tmp}/missing", "--data", "{files}/new.tsv"], "does not exist", True),
    (["train", "--from", "{files}/folder", "--data", "{files}/new.tsv"], "is not a seqapp run", True),
    (["train", "--from", "{senti}", "--data", "{files}/missing.tsv"], "does not exist", True),
    (["train", "--from", "{senti}", "--data", "{files}/new.tsv", "--set", "model.units=32"],
     "model.units: 8 -> 32 changes its shape", True),
    (["train", "--from", "{senti}", "--data", "{files}/new.tsv", "--set", "model.bidirectional=true"],
     "changes its shape", True),
    (["train", "--from", "{senti}", "--data", "{files}/new.tsv", "--allow-changed-data"], "goes with --like", True),
    (["train", "--resume", "--from", "{senti}"], "drop --from", True),
    (["train", "--from", "{senti}", "--data", "{files}/new.tsv", "--set", "model.embedding_dim=16", "--out",
      "{out}"], "change its shape (model.embedding_dim: 8 -> 16)", False),
    (["train", "--from", "{senti}", "--data", "{files}/newlabel.tsv", "--out", "{out}"],
     "has classes that", False),
    (["train", "--from", "{senti}", "--data", "{files}/new.tsv", "--set", "data.level=char", "--out", "{out}"],
     "level: 'word' -> 'char'", False),
    # runs --compare
    (["runs", "--compare", "{senti}"], "at least two runs", True),
    (["runs", "--compare", "{senti}", "{files}/folder"], "is not a seqapp run", True),
    (["runs", "--compare", "{senti}", "{tmp}/missing"], "does not exist", True),
    (["runs", "--compare", "{senti}", "{damaged}"], "preprocessing.json cannot be read", True),
    (["runs", "--plot", "{tmp}/c.png", "--out", "{out}"], "--plot goes with --compare", True),
    (["runs", "--compare", "{senti}", "{senti}", "--plot", "{tmp}/no/such/c.png"], "does not exist", True),
    (["runs", "--compare", "{senti}", "{senti}", "--plot", "{files}"], "is a folder", True),
    (["runs", "--compare", "{senti}", "{senti}", "--task", "sentiment"], "drop --task", True),
    # runs --delete, --keep-last
    (["runs", "--delete", "--out", "{out}"], "removes only the runs it is given", True),
    (["runs", "--delete", "{senti}"], "stdin is not a terminal", False),  # a process's stdin may be a terminal
    (["runs", "--delete", "{files}/folder", "--yes"], "is not a seqapp run folder", True),
    (["runs", "--delete", "{draft}", "--yes"], "--clean-drafts", True),
    (["runs", "--delete", "{link}", "--yes"], "is not a seqapp run folder", True),
    (["runs", "--delete", "{senti}", "{tmp}/missing", "--yes"], "does not exist", True),
    (["runs", "--delete", "{out}/sentiment", "--yes"], "is not a seqapp run folder", True),
    (["runs", "--keep-last", "0", "--out", "{out}", "--yes"], "--keep-last 0", True),
    (["runs", "--keep-last", "-2", "--out", "{out}", "--yes"], "--keep-last -2", True),
    (["runs", "--keep-last", "1", "{senti}", "--yes"], "takes no RUN folders", True),
    (["runs", "--yes", "--out", "{out}"], "--yes goes with", True),
    (["runs", "--delete", "{senti}", "--compare", "--yes"], "do different things", True),
    (["runs", "--keep-last", "1", "--drafts", "--out", "{out}"], "do different things", True),
]


def filled(args: list[str], world: Path, tmp: Path) -> list[str]:
    out = world / "runs"
    senti = min((out / "sentiment").glob("2*[0-9]"), key=lambda path: len(path.name))
    draft = next((out / "sentiment").glob(".partial-*"))
    places = {"out": out, "senti": senti, "changed": out / "sentiment" / "20260101-000000-changed", "draft": draft,
              "link": world / "link", "damaged": next((world / "damaged" / "sentiment").iterdir()),
              "files": world / "files", "tmp": tmp}
    return [arg.format(**places) for arg in args]


@pytest.mark.parametrize("args, fragment, cheap", CASES, ids=[" ".join(case[0])[:60] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cli, world, tmp_path, tree_hash, args, fragment, cheap):
    before = tree_hash(world)
    result = cli(*filled(args, world, tmp_path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in one_error_line(result.stderr)
    assert tree_hash(world) == before


@pytest.mark.process
def test_cheap_checks_answer_before_tensorflow_is_imported(world, tmp_path):
    cheap = [case for case in CASES if case[2]]
    answers = answers_without_tensorflow([filled(args, world, tmp_path) for args, _, _ in cheap], tmp_path)
    for (args, fragment, _), answer in zip(cheap, answers, strict=True):
        assert "was imported" not in answer, (args, answer)
        assert fragment in answer and "exit 2" in answer, (args, answer)


def test_every_new_option_has_help(cli):
    for command, flags in (("train", ["--like", "--from", "--allow-changed-data"]),
                           ("runs", ["--compare", "--plot", "--delete", "--keep-last", "--yes"])):
        text = " ".join(succeeded(cli(command, "--help")).split())
        for flag in flags:
            assert flag in text, (command, flag)
