"""``train.mixed_precision``: 16-bit compute, a float32 output head, runs that still load,
export to LiteRT and predict on both engines.

On a CPU only ``mixed_bfloat16`` is tested (float16 matmuls need a GPU to be of use). The
textgen run reads a short corpus: bfloat16 steps are slow on CPUs without native support,
and 14 batches show what the bundled corpus's 136 would. Its template's XLA training step
(compiling it in bfloat16 took 10 of the 13 seconds) is the ``slow`` case.
"""

from __future__ import annotations

import math

import pytest
from conftest import CORPUS, tiny_config

from seqapp.tasks import REGISTRY, latest_run

HEADS = {"textgen": "next_token_logits", "sentiment": "positive_probability"}


@pytest.mark.parametrize("task, xla", [("sentiment", None), ("textgen", False),
                                       pytest.param("textgen", True, marks=pytest.mark.slow)],
                         ids=["sentiment", "textgen", "textgen-xla"])
def test_mixed_bfloat16_trains_with_a_float32_head_and_predicts_on_both_engines(task, xla, tmp_path, cli):
    import keras

    from seqapp.training import read_history, train

    values = {"data.text": CORPUS} if task == "textgen" else {}
    if xla is not None:
        values["train.jit_compile"] = xla
    cfg = tiny_config(task, "train.mixed_precision=mixed_bfloat16", values=values)
    assert cfg.train.jit_compile is xla
    run = train(cfg, tmp_path, verbose=0, log=lambda _: None)
    assert keras.config.dtype_policy().name == "float32"  # the policy held only while the model was built
    loaded = latest_run(tmp_path, task).model  # from model.keras
    assert loaded.get_layer("embedding").compute_dtype == "bfloat16"
    assert loaded.get_layer(HEADS[task]).compute_dtype == "float32"
    assert loaded.output.dtype == "float32"
    assert all(math.isfinite(float(row["loss"])) for row in read_history(run.path / "history.csv"))
    assert list((run.path / "litert").glob("*.tflite")), "no LiteRT graph was exported"
    for engine in ("tf", "litert"):  # in this process, whose dtype policy is float32 again
        if task == "textgen":
            result = cli("generate", "--run", run.path, "--length", "20", "--random-seed", "1", "--engine", engine)
        else:
            result = cli("predict", "--run", run.path, "--engine", engine, *REGISTRY[task].tiny["inputs"])
        assert result.exit_code == 0 and result.stdout.strip(), result.output
