"""The suite's result: its key layout, the seqapp/peer ratios, and the JSON and markdown files.

Every key is present in every run; what was not measured (a missing peer, a section that
``--quick`` skips) is ``null`` and ``notes`` says why. Layout (``<cell>`` is ``lstm_256``,
``gru_256`` or ``simplernn_256``; ``<side>`` is ``seqapp`` or ``torch``)::

    machine                              cpu_model, cores, avx2, avx512, ..., sgemm_gflops
    train_tokens_per_s.<side>.<cell>     training throughput after a warm-up step
    train_pct_of_sgemm.<side>.<cell>     the same as % of the sgemm bound (bench/flops.py)
    val_loss.<side>.<cell>               validation nats/char after the same time budget
    generate_chars_per_s.<side>.batch_1 / batch_64     steady state, first call excluded
    generate_chars_per_s.seqapp.batch_1_litert         the same on the LiteRT engine (ratio: vs peer batch_1)
    generate_first_call_s.<side>.batch_1 / batch_64    that first call
    latency_s.<command>.<variant>        median wall seconds of a fresh process
    peak_rss_kb.<command>.<variant>      largest peak RSS of those processes
    time_to_quality.<side>.points        [training seconds, validation nats/char] (full runs only)
    fast_rnn_speedup.<task>              sentiment, tagging, translate: training tokens/s of the template
                                         with Keras's recurrent loop and with seqapp's fast one, and
                                         their ratio (bench/fastrnn_speed.py --tasks)
    quality.<task>                       each task's headline metric on real data (bench/quality.py;
                                         full runs, or kept from the last run that measured it)
    ratios.<figure>                      seqapp / peer (null unless both exist)
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.flops import cell_flops_per_token

CELLS = ("lstm", "gru", "simplernn")
CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "simplernn": "SimpleRNN"}
SIDES = ("seqapp", "torch")
BATCHES = ("batch_1", "batch_64")
LITERT_BATCH = "batch_1_litert"  # seqapp only: the engine `seqapp generate` uses by default, against the peer's batch 1
SPEEDUP_TASKS = ("sentiment", "tagging", "translate")
LATENCY = {"generate": ("default", "tf", "torch"), "predict_sentiment": ("default", "tf"),
           "predict_translate": ("default", "tf"), "predict_sentiment_10k": ("default", "tf"),
           "predict_translate_1k": ("default", "tf")}


def cell_key(cell: str, units: int) -> str:
    """``lstm_256``-style key of a cell and its size."""
    return f"{cell}_{units}"


def empty_result(units: int = 256, embed: int = 64) -> dict:
    """The result layout with every figure ``null``."""
    cells = [cell_key(cell, units) for cell in CELLS]
    per_cell = {side: dict.fromkeys(cells) for side in SIDES}
    per_batch = {side: dict.fromkeys(BATCHES + ((LITERT_BATCH,) if side == "seqapp" else ())) for side in SIDES}
    per_command = {command: dict.fromkeys(variants) for command, variants in LATENCY.items()}
    return {
        "schema": 1, "quick": None, "started_utc": None, "wall_s": None, "machine": {}, "settings": {},
        "flops_per_token": {cell_key(c, units): cell_flops_per_token(c, embed, units) for c in CELLS},
        "train_tokens_per_s": per_cell, "train_pct_of_sgemm": json.loads(json.dumps(per_cell)),
        "val_loss": json.loads(json.dumps(per_cell)), "generate_chars_per_s": per_batch,
        "generate_first_call_s": json.loads(json.dumps(per_batch)), "latency_s": per_command,
        "peak_rss_kb": json.loads(json.dumps(per_command)), "time_to_quality": None, "quality": None,
        "fast_rnn_speedup": dict.fromkeys(SPEEDUP_TASKS),
        "ratios": {}, "details": {},
        "notes": [],
    }


def ratio(ours: float | None, peer: float | None) -> float | None:
    """``ours / peer`` rounded to 3 places, or None when either is missing or the peer is 0."""
    if ours is None or not peer:
        return None
    return round(ours / peer, 3)


def add_ratios(result: dict) -> dict:
    """Fill ``result["ratios"]``: seqapp / torch for each figure both sides have; return the result."""
    ratios = {}
    for figure in ("train_tokens_per_s", "val_loss", "generate_chars_per_s"):
        for key, ours in result[figure]["seqapp"].items():
            peer_key = "batch_1" if key == LITERT_BATCH else key
            ratios[f"{figure}.{key}"] = ratio(ours, result[figure]["torch"].get(peer_key))
    for figure in ("latency_s", "peak_rss_kb"):
        generate = result[figure]["generate"]
        for variant in ("default", "tf"):
            ratios[f"{figure}.generate.{variant}"] = ratio(generate[variant], generate["torch"])
    final = {side: last_loss(result, side) for side in SIDES}
    ratios["time_to_quality.val_loss"] = ratio(final["seqapp"], final["torch"])
    result["ratios"] = ratios
    return result


def last_loss(result: dict, side: str) -> float | None:
    """The validation loss at the end of a side's time-to-quality curve, if measured."""
    points = ((result.get("time_to_quality") or {}).get(side) or {}).get("points")
    return points[-1][1] if points else None


def fmt(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals; ``n/a`` for None."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def with_pct(tokens: float | None, pct: float | None) -> str:
    """Tokens/s with its share of the sgemm bound, e.g. ``36,228 (7.1%)``."""
    return fmt(tokens) if pct is None else f"{fmt(tokens)} ({pct:.1f}%)"


def cell_label(key: str) -> str:
    """``lstm_256`` -> ``LSTM(256)``."""
    cell, _, units = key.partition("_")
    return f"{CELL_NAMES.get(cell, cell)}({units})"


def measured(row: list[str]) -> bool:
    """False for a row with no figure at all (every value ``n/a``, ``–`` or empty)."""
    return any(value not in ("n/a", "–", "") for value in row[1:])


def training_rows(result: dict) -> list[list[str]]:
    """Table rows for training throughput and validation loss, per cell."""
    rows, seconds = [], result["settings"].get("train_seconds")
    for key in result["train_tokens_per_s"]["seqapp"]:
        name = cell_label(key)
        tokens = [with_pct(result["train_tokens_per_s"][s][key], result["train_pct_of_sgemm"][s][key])
                  for s in SIDES]
        rows.append([f"{name}: training tokens/s (% of sgemm bound)", *tokens,
                     fmt(result["ratios"].get(f"train_tokens_per_s.{key}"), 2)])
        losses = [fmt(result["val_loss"][s][key], 3) for s in SIDES]
        rows.append([f"{name}: validation loss after {fmt(seconds)} s (nats/char)", *losses,
                     fmt(result["ratios"].get(f"val_loss.{key}"), 2)])
    quality = result.get("time_to_quality")
    if quality:
        rows.append([f"default textgen template vs the peer's defaults: validation loss after "
                     f"{fmt(quality['seconds'])} s (nats/char)", *(fmt(last_loss(result, s), 3) for s in SIDES),
                     fmt(result["ratios"].get("time_to_quality.val_loss"), 2)])
    return rows


def generation_rows(result: dict) -> list[list[str]]:
    """Table rows for steady-state generation speed and the first call."""
    rows = []
    for batch in (*BATCHES, LITERT_BATCH):
        label = "batch 1, LiteRT engine (peer: batch 1)" if batch == LITERT_BATCH else batch.replace("_", " ")
        peer = "batch_1" if batch == LITERT_BATCH else batch
        sides = [result[figure]["seqapp"].get(batch) for figure in ("generate_chars_per_s", "generate_first_call_s")]
        peers = [result[figure]["torch"].get(peer) for figure in ("generate_chars_per_s", "generate_first_call_s")]
        rows.append([f"generation chars/s, {label} (steady state)", fmt(sides[0]), fmt(peers[0]),
                     fmt(result["ratios"].get(f"generate_chars_per_s.{batch}"), 2)])
        rows.append([f"generation first call (s), {label}", fmt(sides[1], 3), fmt(peers[1], 3), ""])
    return rows


def latency_rows(result: dict) -> list[list[str]]:
    """Table rows for each command's median latency and peak RSS (MB); the peer column for generate."""
    labels = result["settings"].get("latency_labels", {})
    rows = []
    for command, variants in LATENCY.items():
        for variant in (v for v in variants if v != "torch"):
            seconds, rss = result["latency_s"][command][variant], result["peak_rss_kb"][command][variant]
            peer_s = result["latency_s"][command].get("torch")
            peer_rss = result["peak_rss_kb"][command].get("torch")
            name = labels.get(command, command) + ("" if variant == "default" else f" `--engine {variant}`")
            rows.append([f"{name}: seconds (median)", fmt(seconds, 2),
                         fmt(peer_s, 2) if "torch" in variants else "–",
                         fmt(result["ratios"].get(f"latency_s.{command}.{variant}"), 2)])
            rows.append([f"{name}: peak RSS (MB)", fmt(None if rss is None else rss / 1024),
                         fmt(None if peer_rss is None else peer_rss / 1024) if "torch" in variants else "–",
                         fmt(result["ratios"].get(f"peak_rss_kb.{command}.{variant}"), 2)])
    return rows


def machine_line(machine: dict) -> str:
    """One line about the machine and the software versions."""
    vector = ", ".join(flag for flag, present in (("AVX2", machine.get("avx2")), ("AVX-512", machine.get("avx512")))
                       if present) or "no AVX2"
    return (f"{machine.get('cpu_model')}, {machine.get('cores')} cores ({vector}); sgemm "
            f"{fmt(machine.get('sgemm_gflops'), 1)} GFLOP/s; Python {machine.get('python')}, TensorFlow "
            f"{machine.get('tensorflow')}, Keras {machine.get('keras')}, torch {machine.get('torch') or 'n/a'}; "
            f"load average {machine.get('loadavg_start')} at the start, {machine.get('loadavg_end')} at the end")


def render_markdown(result: dict) -> str:
    """The result as a markdown table (seqapp, PyTorch peer, ratio) with the machine line and the notes."""
    mode = "--quick" if result.get("quick") else "full"
    lines = [f"# seqapp benchmark ({mode}), {result.get('started_utc')}", "", machine_line(result["machine"]), "",
             "| figure | seqapp | PyTorch peer | ratio |", "| --- | ---: | ---: | ---: |"]
    rows = training_rows(result) + generation_rows(result) + latency_rows(result)
    lines += ["| " + " | ".join(row) + " |" for row in rows if measured(row)]
    speedups = {task: f for task, f in (result.get("fast_rnn_speedup") or {}).items() if f}
    if speedups:
        lines += ["", "Training tokens/s with Keras's recurrent loop and with seqapp's fast one (masked sequences; "
                  "`bench/fastrnn_speed.py --tasks`, alternating turns in one process; ratio: fast / Keras's):", "",
                  "| task (template, batch) | Keras's loop | fast loop | ratio |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {task} (`{f['template']}`, {f['batch_size']}) | {fmt(f['stock_tokens_per_s'])} | "
                  f"{fmt(f['fast_tokens_per_s'])} | {fmt(f['ratio'], 2)} |" for task, f in speedups.items()]
    if result.get("quality"):
        from bench.quality import markdown

        lines += ["", "Each task's headline metric on real data (`python -m bench.quality`):", "",
                  markdown(result["quality"])]
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in result["notes"]]
    wall = result.get("wall_s")
    lines += ["", f"Whole run: {fmt(wall)} s. `n/a`: not measured (see the notes); rows with nothing measured "
              "are left out. Ratios are seqapp / peer."]
    return "\n".join(lines) + "\n"


def write(result: dict, folder: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``folder``; return both paths.

    A run that did not measure ``quality`` or ``fast_rnn_speedup`` (``--quick``) keeps the figures
    of the last one that did, so the reference for the next change stays.
    """
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "latest.json", folder / "latest.md"
    try:
        last = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {}
    except (OSError, ValueError):
        last = {}
    last = last if isinstance(last, dict) else {}
    if result.get("quality") is None:
        result["quality"] = last.get("quality")
    speedup = result.get("fast_rnn_speedup") or {}
    if not any(speedup.values()) and isinstance(last.get("fast_rnn_speedup"), dict):
        result["fast_rnn_speedup"] = last["fast_rnn_speedup"]
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(result), encoding="utf-8")
    return json_path, md_path
