"""Install seqapp into a fresh venv of each other supported Python and train and sample a tiny model there.

A ``process`` test (each install downloads TensorFlow): run with
``pytest -m process --runprocess tests/test_pythons.py -s``; ``-s`` shows the install, train
and generate timings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ["3.10", "3.12", "3.13"]
SEED = "hello"
LENGTH = 40
TRAIN_SETTINGS = ["model.units=16", "model.embedding_dim=8", "data.seq_len=20", "train.batch_size=16"]


def _version_of(python: str) -> str | None:
    """The "X.Y" of an interpreter, or None when it does not run."""
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(version: str) -> str | None:
    """pythonX.Y on PATH, else the newest pyenv build of it; None when there is none."""
    candidates = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))

    def release(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parents[1].name))

    candidates += [str(path) for path in sorted(pyenv_root.glob(f"versions/*/bin/python{version}"),
                                                key=release, reverse=True)]
    return next((python for python in candidates if _version_of(python) == version), None)


def _tail(done: subprocess.CompletedProcess, chars: int = 3000) -> str:
    return f"exit {done.returncode}\n--- stdout ---\n{done.stdout[-chars:]}\n--- stderr ---\n{done.stderr[-chars:]}"


def _run(args: list, timeout: int, env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=env, cwd=cwd)
    return done, time.monotonic() - start


@pytest.mark.process
@pytest.mark.parametrize("version", VERSIONS)
def test_install_train_generate(version: str, tmp_path: Path) -> None:
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip(f"Python {version} runs this test session; the main suite covers it")
    python = find_python(version)
    if python is None:
        pytest.skip(f"no python{version} on PATH or under ~/.pyenv/versions")

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONIOENCODING": "utf-8"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "SEQAPP_RUNS"):
        env.pop(name, None)
    venv = tmp_path / "venv"
    runs_dir = tmp_path / "runs"
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    timings: dict[str, float] = {}
    try:
        done, _ = _run([python, "-m", "venv", venv], 300, env, tmp_path)
        assert done.returncode == 0, f"venv for {python} failed\n{_tail(done)}"

        done, timings["install"] = _run(  # --no-compile: only what runs is byte-compiled (12 s less in all)
            [bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
             "-e", f"{ROOT}[test]"], 1800, env, tmp_path)
        assert done.returncode == 0, f"pip install on Python {version} failed\n{_tail(done)}"

        seqapp = bin_dir / "seqapp"
        sets = [arg for setting in TRAIN_SETTINGS for arg in ("--set", setting)]
        done, timings["train"] = _run(
            [seqapp, "train", "textgen", "--epochs", "1", *sets, "--out", runs_dir, "-q"], 600, env, tmp_path)
        assert done.returncode == 0, f"train on Python {version} failed\n{_tail(done)}"
        saved = re.search(r"saved run (\S+)", done.stdout + done.stderr)
        assert saved, f"no 'saved run' in the output of train on Python {version}\n{_tail(done)}"

        done, timings["generate"] = _run(
            [seqapp, "generate", "--seed", SEED, "--length", LENGTH, "--random-seed", "1", "--out", runs_dir],
            300, env, tmp_path)
        assert done.returncode == 0, f"generate on Python {version} failed\n{_tail(done)}"
        text = done.stdout.removesuffix("\n")  # the CLI ends the sample with one line break
        assert text.startswith(SEED), f"generated text does not start with the seed: {text!r}"
        assert len(text) == len(SEED) + LENGTH, f"expected {len(SEED) + LENGTH} characters, got {len(text)}: {text!r}"

        done, _ = _run([seqapp, "runs", "--json", "--out", runs_dir], 300, env, tmp_path)
        assert done.returncode == 0, f"runs --json on Python {version} failed\n{_tail(done)}"
        listed = json.loads(done.stdout)
        assert [(run["task"], run["units"]) for run in listed] == [("textgen", 16)], listed
        assert Path(listed[0]["run"]).name == Path(saved.group(1)).name, (listed, saved.group(1))
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 2 GB each; keep the runs for inspection
        print(f"\nPython {version} ({python}): " + ", ".join(f"{step} {secs:.1f} s" for step, secs in timings.items()))
