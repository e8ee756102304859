"""What the latency benchmark needs first: small seqapp runs and files of inputs.

The runs are trained with the ``seqapp`` command into a temporary ``--out`` folder, all three
at once (they are set-up, not measured). ``--quick``: one epoch of each template on the
bundled data (the textgen model keeps the template's LSTM(256), the peer's size). The full
run trains the textgen model for one epoch on Tiny Shakespeare instead.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from pathlib import Path

from bench import ROOT

SAVED = re.compile(r"^saved run (.+)$", re.MULTILINE)


def train_commands(seqapp: list[str], out: Path, quick: bool, corpus: Path | None) -> dict[str, list[str]]:
    """The ``seqapp train`` command of each run, by task."""
    common = ["--epochs", "1", "--out", str(out), "-q"]
    textgen = [*seqapp, "train", "textgen", *common]
    if quick or corpus is None:
        textgen += ["--set", "train.jit_compile=false"]  # one short epoch: compiling would cost more than it saves
    else:
        textgen += ["--data", str(corpus), "--set", "train.batch_size=64"]
    return {"textgen": textgen, "sentiment": [*seqapp, "train", "sentiment", *common],
            "translate": [*seqapp, "train", "translate", *common]}


def saved_run(stdout: str, out: Path, task: str) -> Path:
    """The run folder a ``seqapp train`` printed (``saved run PATH``), else the newest under ``out/task``."""
    match = SAVED.search(stdout)
    if match and Path(match.group(1).strip()).is_dir():
        return Path(match.group(1).strip())
    folders = sorted(path for path in (out / task).glob("*") if path.is_dir())
    if not folders:
        raise RuntimeError(f"seqapp train {task} saved no run under {out}")
    return folders[-1]


def train_runs(commands: dict[str, list[str]], out: Path, timeout: float = 1800) -> tuple[dict[str, Path], float]:
    """Run all training commands at once; return the run folder of each task and the seconds it took."""
    start = time.perf_counter()
    procs = {task: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for task, cmd in commands.items()}
    runs, failures = {}, []
    for task, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            failures.append(f"seqapp train {task} failed ({proc.returncode}): {stderr.strip()[-500:]}")
            continue
        runs[task] = saved_run(stdout, out, task)
    if failures:
        raise RuntimeError("; ".join(failures))
    return runs, time.perf_counter() - start


def bundled_column(name: str) -> list[str]:
    """The first column (the text or source sentence) of a bundled TSV file, distinct, in file order."""
    lines = (ROOT / "data" / name).read_text(encoding="utf-8").splitlines()
    texts = (line.split("\t")[0].strip() for line in lines)
    return list(dict.fromkeys(text for text in texts if text))


def write_inputs(folder: Path, sentiment_lines: int, translate_lines: int) -> dict[str, Path]:
    """Input files for the many-input calls: bundled sentences repeated to the wanted counts."""
    files = {}
    for task, source, count in (("sentiment", "sentiment.tsv", sentiment_lines),
                                ("translate", "pairs.tsv", translate_lines)):
        lines = itertools.islice(itertools.cycle(bundled_column(source)), count)
        files[task] = folder / f"{task}_{count}.txt"
        files[task].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files
