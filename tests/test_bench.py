"""The benchmark suite's pieces (bench/): fast checks, no peer needed (the ones that start processes
are ``process`` tests)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` without `python -m`: the repository root holds bench/
    sys.path.insert(0, str(ROOT))

from bench import fixtures, latency, peers, report  # noqa: E402
from bench.flops import cell_flops_per_token, percent_of_bound  # noqa: E402
from bench.machine import parse_cpuinfo, sgemm_gflops  # noqa: E402
from bench.suite import Settings, busy_note, repeats  # noqa: E402

CPUINFO_AVX512 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni

processor\t: 2
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni
"""

CPUINFO_AVX2 = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_cpuinfo_with_avx512() -> None:
    info = parse_cpuinfo(CPUINFO_AVX512)
    assert info["cpu_model"] == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert info["cores"] == 3
    assert info["avx2"] and info["avx512"] and info["fma"]
    assert info["avx512_flags"] == ["avx512_vnni", "avx512bw", "avx512dq", "avx512f", "avx512vl"]


def test_cpuinfo_without_avx512_or_anything() -> None:
    info = parse_cpuinfo(CPUINFO_AVX2)
    assert (info["cpu_model"], info["cores"], info["avx2"], info["avx512"]) == ("AMD EPYC", 2, True, False)
    assert info["avx512_flags"] == []
    empty = parse_cpuinfo("")
    assert (empty["cpu_model"], empty["cores"], empty["avx2"], empty["avx512"]) == (None, 0, False, False)


def test_sgemm_measures_a_positive_finite_rate() -> None:
    gflops = sgemm_gflops(n=128, repeats=2)
    assert gflops > 0 and math.isfinite(gflops)


def test_flops_per_token_per_cell() -> None:
    lstm = cell_flops_per_token("lstm", 64, 256)
    assert lstm == 3 * 2 * 4 * (64 + 256) * 256 == 1_966_080
    assert cell_flops_per_token("gru", 64, 256) * 4 == lstm * 3
    assert cell_flops_per_token("simplernn", 64, 256) * 4 == lstm
    assert cell_flops_per_token("lstm", 128, 256) > lstm
    with pytest.raises(KeyError):
        cell_flops_per_token("transformer", 64, 256)


def test_percent_of_the_sgemm_bound() -> None:
    assert percent_of_bound(10_000, 1_000_000, 100.0) == 10.0  # 1e10 FLOP/s of 1e11
    assert percent_of_bound(50_000, 2_000_000, 50.0) == 200.0
    assert percent_of_bound(None, 1_000_000, 100.0) is None
    assert percent_of_bound(10_000, 1_000_000, None) is None


def sample_result() -> dict:
    """A result as the suite leaves it: seqapp measured, the PyTorch peer missing."""
    result = report.empty_result()
    result.update(quick=True, started_utc="2026-01-01T00:00:00Z", wall_s=123.4)
    result["settings"] = {"train_seconds": 10.0}
    result["machine"] = {"cpu_model": "AMD EPYC", "cores": 2, "avx2": True, "avx512": False, "sgemm_gflops": 74.0,
                         "python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.1", "torch": None}
    result["train_tokens_per_s"]["seqapp"]["lstm_256"] = 36228.0
    result["train_pct_of_sgemm"]["seqapp"]["lstm_256"] = 9.6
    result["val_loss"]["seqapp"]["lstm_256"] = 1.998
    result["generate_chars_per_s"]["seqapp"]["batch_1"] = 3430.0
    result["latency_s"]["generate"]["default"] = 0.82
    result["peak_rss_kb"]["generate"]["default"] = 204800
    result["notes"].append("PyTorch peer: no Python with torch found (give --torch-python): peer figures are n/a")
    return report.add_ratios(result)


def table_row(markdown: str, start: str) -> list[str]:
    """The cells of the table row whose first cell starts with ``start``."""
    for line in markdown.splitlines():
        if line.startswith(f"| {start}"):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row {start!r} in:\n{markdown}")


def test_markdown_shows_a_missing_peer_as_na_with_the_note() -> None:
    markdown = report.render_markdown(sample_result())
    assert table_row(markdown, "LSTM(256): training tokens/s") == [
        "LSTM(256): training tokens/s (% of sgemm bound)", "36,228 (9.6%)", "n/a", "n/a"]
    assert table_row(markdown, "LSTM(256): validation loss")[1:] == ["1.998", "n/a", "n/a"]
    assert table_row(markdown, "generation chars/s, batch 1")[1:] == ["3,430", "n/a", "n/a"]
    assert table_row(markdown, "generate: peak RSS")[1:3] == ["200", "n/a"]
    assert "- PyTorch peer: no Python with torch found" in markdown
    assert "GRU(256)" not in markdown  # nothing measured: the row is left out
    assert "AMD EPYC, 2 cores (AVX2); sgemm 74.0 GFLOP/s" in markdown


def test_ratios_are_seqapp_over_the_peer_where_both_exist() -> None:
    result = sample_result()
    assert result["ratios"]["train_tokens_per_s.lstm_256"] is None
    result["train_tokens_per_s"]["torch"]["lstm_256"] = 60000.0
    result["latency_s"]["generate"]["torch"] = 3.28
    report.add_ratios(result)
    assert result["ratios"]["train_tokens_per_s.lstm_256"] == round(36228 / 60000, 3)
    assert result["ratios"]["latency_s.generate.default"] == 0.25
    assert result["ratios"]["latency_s.generate.tf"] is None
    markdown = report.render_markdown(result)
    assert table_row(markdown, "LSTM(256): training tokens/s")[2:] == ["60,000", "0.60"]


def test_the_litert_generation_figure_is_compared_with_the_peers_batch_1() -> None:
    result = sample_result()
    result["generate_chars_per_s"]["seqapp"]["batch_1_litert"] = 4000.0
    result["generate_chars_per_s"]["torch"]["batch_1"] = 320.0
    report.add_ratios(result)
    assert result["ratios"]["generate_chars_per_s.batch_1_litert"] == 12.5
    markdown = report.render_markdown(result)
    assert table_row(markdown, "generation chars/s, batch 1, LiteRT")[1:] == ["4,000", "320", "12.50"]


def test_result_files_hold_every_key(tmp_path: Path) -> None:
    json_path, md_path = report.write(sample_result(), tmp_path)
    saved = json.loads(json_path.read_text())
    for side in ("seqapp", "torch"):
        assert set(saved["train_tokens_per_s"][side]) == {"lstm_256", "gru_256", "simplernn_256"}
        litert = {"batch_1_litert"} if side == "seqapp" else set()
        assert set(saved["generate_chars_per_s"][side]) == {"batch_1", "batch_64"} | litert
    assert set(saved["latency_s"]["generate"]) == {"default", "tf", "torch"}
    assert saved["train_tokens_per_s"]["torch"]["lstm_256"] is None
    assert md_path.read_text().startswith("# seqapp benchmark (--quick)")


def fake_python(folder: Path, name: str, status: int) -> str:
    """An executable that ignores its arguments and exits with ``status``."""
    path = folder / name
    path.write_text(f"#!/bin/sh\nexit {status}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.process
def test_peer_detection(tmp_path: Path) -> None:
    without = fake_python(tmp_path, "no-torch", 1)
    with_torch = fake_python(tmp_path, "has-torch", 0)
    assert peers.find_torch_python([]) is None
    assert peers.find_torch_python([str(tmp_path / "missing"), without]) is None
    assert peers.find_torch_python([str(tmp_path / "missing"), without, with_torch]) == with_torch


@pytest.mark.process
def test_command_latency_and_peak_rss_of_a_fresh_process() -> None:
    ballast = b"x" * (300 << 20)  # this process's peak must not show in the child's
    child = [sys.executable, "-c", "import sys; b = b'y' * (50 << 20); print('a'); print('b'); sys.stdout.flush()"]
    figures = latency.run_process(child)
    assert len(ballast) and figures["lines"] == 2 and figures["wall_s"] > 0
    assert 50 * 1024 < figures["peak_rss_kb"] < 250 * 1024
    with pytest.raises(RuntimeError, match="exited 3"):
        latency.run_process([sys.executable, "-c", "import sys; sys.exit(3)"])


@pytest.mark.process
def test_round_robin_repeats_and_failures() -> None:
    commands = {"ok.default": [sys.executable, "-c", "pass"],
                "bad.default": [sys.executable, "-c", "raise SystemExit(2)"]}
    measured = latency.measure(commands, {"ok.default": 3, "bad.default": 2})
    assert len(measured["ok.default"]["runs_s"]) == 3
    assert measured["ok.default"]["median_s"] == sorted(measured["ok.default"]["runs_s"])[1]
    assert "exited 2" in measured["bad.default"]["error"]


def test_saved_run_is_read_from_the_training_output(tmp_path: Path) -> None:
    run = tmp_path / "textgen" / "20260101-000000"
    run.mkdir(parents=True)
    assert fixtures.saved_run(f"epoch 1\nsaved run {run}\ntest loss 3.3\n", tmp_path, "textgen") == run
    assert fixtures.saved_run("", tmp_path, "textgen") == run
    with pytest.raises(RuntimeError):
        fixtures.saved_run("", tmp_path, "sentiment")


def test_many_input_files(tmp_path: Path) -> None:
    files = fixtures.write_inputs(tmp_path, 25, 7)
    assert len(files["sentiment"].read_text().splitlines()) == 25
    assert len(files["translate"].read_text().splitlines()) == 7
    assert "\t" not in files["translate"].read_text()


def test_quick_settings_are_shorter() -> None:
    quick, full = Settings.for_mode(True, None, Path("x")), Settings.for_mode(False, None, Path("x"))
    assert quick.cells == ("lstm",) and full.cells == ("lstm", "gru", "simplernn")
    assert (quick.reps, full.reps) == (3, 5)
    assert [repeats(full, name) for name in ("generate.default", "generate.tf", "predict_translate_1k.default")] == [
        5, 5, 5]
    assert [repeats(quick, name) for name in ("generate.torch", "generate.tf", "predict_sentiment_10k.default")] == [
        3, 1, 1]
    assert quick.train_seconds < full.train_seconds and full.gen_steps["batch_1"] == 20_000


def test_a_busy_machine_is_noted() -> None:
    assert busy_note({"loadavg_start": [0.4, 1.0, 1.0], "cores_usable": 2}) is None
    assert "load average 1.50 on 2 cores" in busy_note({"loadavg_start": [1.5, 1.0, 1.0], "cores_usable": 2})
    assert busy_note({"loadavg_start": [1.5, 1.0, 1.0], "cores_usable": 4}) is None
    assert busy_note({"loadavg_start": None, "cores": 2}) is None


def test_time_to_quality_measures_the_default_template_at_each_checkpoint(tmp_path: Path) -> None:
    """seqapp's curve: one point per checkpoint, at or past it on the (paused) clock, finite
    losses that fall as training goes on; the plot is written. (A small model, without the XLA
    step, whose compiling took longer than the 2 s of training.)"""
    from bench import time_to_quality

    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    curve = time_to_quality.seqapp_curve(corpus, 2.0, ["model.units=16", "model.embedding_dim=8",
                                                       "data.seq_len=20", "train.jit_compile=false"])
    marks = time_to_quality.checkpoints(2.0)
    assert len(curve["points"]) == len(marks) == 5
    assert all(seconds >= mark for (seconds, _), mark in zip(curve["points"], marks))
    losses = [loss for _, loss in curve["points"]]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert curve["settings"]["units"] == 16 and curve["settings"]["seq_len"] == 20
    result = {"machine": "test", "seqapp": curve, "torch": {"points": [[1.0, 3.0], [4.0, 2.5]]}}
    time_to_quality.plot(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quality_figures_are_merged_into_latest_and_kept_by_a_run_that_did_not_measure_them(tmp_path: Path) -> None:
    from bench import quality

    (tmp_path / "latest.json").write_text(json.dumps({"schema": 1, "quality": {"sine": {"metric": "test_mse",
                                                      "value": 1.0, "data": "old"}}, "notes": []}))
    sentiment = {"metric": "test_accuracy", "value": 0.84, "std": 0.01, "seeds": [0.83, 0.85],
                 "bow_1_2gram": 0.82, "data": "amazon + imdb"}
    quality.merge({**dict.fromkeys(quality.TASKS), "sentiment": sentiment}, ["quality.tagging: not found"], tmp_path)
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["quality"]["sentiment"] == sentiment and saved["quality"]["sine"]["data"] == "old"
    assert saved["quality"]["tagging"] is None and "quality.tagging: not found" in saved["notes"]
    table = (tmp_path / "quality.md").read_text()
    assert "| sentiment | amazon + imdb | test_accuracy | 0.84 ± 0.01 | bow_1_2gram 0.82 |" in table

    speedup = {"template": "tagging", "batch_size": 32, "stock_tokens_per_s": 4000, "fast_tokens_per_s": 7000,
               "ratio": 1.75}
    saved["fast_rnn_speedup"] = {"sentiment": None, "tagging": speedup, "translate": None}
    (tmp_path / "latest.json").write_text(json.dumps(saved))
    result = report.add_ratios(report.empty_result())  # a --quick run: no quality or speed-ups of its own
    result["settings"], result["machine"] = {}, {}
    report.write(result, tmp_path)
    kept = json.loads((tmp_path / "latest.json").read_text())
    assert kept["quality"]["sentiment"] == sentiment and kept["fast_rnn_speedup"]["tagging"] == speedup
    assert "0.84 ± 0.01" in (tmp_path / "latest.md").read_text()


def test_fast_rnn_speedup_is_in_every_result_and_gets_a_table_when_measured() -> None:
    result = sample_result()
    assert result["fast_rnn_speedup"] == {"sentiment": None, "tagging": None, "translate": None}
    assert "Keras's loop" not in report.render_markdown(result)
    result["fast_rnn_speedup"]["tagging"] = {"template": "tagging", "batch_size": 32, "stock_tokens_per_s": 4000,
                                             "fast_tokens_per_s": 7000, "ratio": 1.75}
    assert table_row(report.render_markdown(result), "tagging") == ["tagging (`tagging`, 32)", "4,000", "7,000", "1.75"]
    quick, full = Settings.for_mode(True, None, Path("x")), Settings.for_mode(False, None, Path("x"))
    assert quick.speedup_seconds * quick.speedup_rounds < full.speedup_seconds * full.speedup_rounds


def test_the_fast_rnn_task_comparison_notes_a_missing_data_set(tmp_path: Path) -> None:
    from bench.fastrnn_speed import compare_tasks

    figures, notes = compare_tasks(["sentiment", "translate"], tmp_path, 1.0, 1, log=lambda line: None)
    assert figures == {"sentiment": None, "translate": None}
    assert notes == [f"fast_rnn_speedup.sentiment: {tmp_path / 'sentiment'} not found",
                     f"fast_rnn_speedup.translate: {tmp_path / 'translation' / 'fra-eng.tsv'} not found"]


def test_both_copies_train_on_one_epoch_with_each_shape_first_and_its_tokens_counted() -> None:
    """The batches of each shape come first (the warm-up traces them all), then the rest in their
    order, endlessly; tokens are the integer (batch, time) inputs that are not padding."""
    import numpy as np
    import tensorflow as tf

    from bench.fastrnn_speed import fixed_batches

    widths = [3, 3, 5, 3, 5, 2]
    batches = [({"words": np.full((2, width), index + 1) * (np.arange(width) < 2), "chars": np.ones((2, width, 4))},
                np.zeros((2, width))) for index, width in enumerate(widths)]
    spec = ({"words": tf.TensorSpec((None, None), tf.int64), "chars": tf.TensorSpec((None, None, 4), tf.float64)},
            tf.TensorSpec((None, None), tf.float64))
    dataset = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    pipeline, tokens, warm_up = fixed_batches(dataset)
    firsts = [int(words["words"][0, 0]) for words, _ in pipeline.take(9)]
    assert firsts == [1, 3, 6, 2, 4, 5, 1, 3, 6]  # widths 3, 5, 2 first; then the others; again
    assert tokens == [4] * 6 and warm_up == 4
