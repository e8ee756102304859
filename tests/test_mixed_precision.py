"""``train.mixed_precision``: 16-bit compute, a float32 output head, runs that still load,
export to LiteRT and predict on both engines.

On a CPU only ``mixed_bfloat16`` is tested (float16 matmuls need a GPU to be of use).
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from seqapp.tasks import REGISTRY, latest_run, load_config

HEADS = {"textgen": "next_token_logits", "sentiment": "positive_probability"}


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "seqapp", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
    return result.stdout


@pytest.mark.parametrize("task", sorted(HEADS))
def test_mixed_bfloat16_trains_with_a_float32_head_and_predicts_on_both_engines(task, tmp_path):
    import keras

    from seqapp.training import read_history, train

    cfg = load_config(task, [*REGISTRY[task].tiny["set"], "train.mixed_precision=mixed_bfloat16"],
                      {"train.epochs": 1})
    run = train(cfg, tmp_path, verbose=0, log=lambda _: None)
    assert keras.config.dtype_policy().name == "float32"  # the policy held only while the model was built
    loaded = latest_run(tmp_path, task).model  # from model.keras
    assert loaded.get_layer("embedding").compute_dtype == "bfloat16"
    assert loaded.get_layer(HEADS[task]).compute_dtype == "float32"
    assert loaded.output.dtype == "float32"
    assert all(math.isfinite(float(row["loss"])) for row in read_history(run.path / "history.csv"))
    assert list((run.path / "litert").glob("*.tflite")), "no LiteRT graph was exported"
    for engine in ("tf", "litert"):
        if task == "textgen":
            cli("generate", "--run", str(run.path), "--length", "20", "--random-seed", "1", "--engine", engine)
        else:
            cli("predict", "--run", str(run.path), "--engine", engine, *REGISTRY[task].tiny["inputs"])
