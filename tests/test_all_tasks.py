"""One test suite for every task in the registry: a new task gets this coverage for free.

Each task trains from its own template with its ``tiny`` overrides for one epoch, the run
is reloaded from disk in a fresh object, and ``predict`` must give the same output.
"""

from __future__ import annotations

import pytest

from seqapp import config
from seqapp.tasks import REGISTRY, latest_run, load_config


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_task_trains_saves_reloads_and_predicts_the_same(name, tmp_path):
    from seqapp.training import read_history, train

    task = REGISTRY[name]()
    assert task.tiny, f"{name} has no 'tiny' settings for the shared test"
    cfg = load_config(name, task.tiny.get("set", []), {"train.epochs": 1})
    run = train(cfg, tmp_path, verbose=0, log=lambda _: None)
    options = task.tiny.get("options", {})
    before = list(task.predict(run, task.tiny.get("inputs", []), **options))
    assert before, "predict printed nothing"

    reloaded = latest_run(tmp_path, name)
    assert reloaded.path == run.path and reloaded.config == cfg
    after = list(REGISTRY[name]().predict(reloaded, task.tiny.get("inputs", []), **options))
    assert after == before
    assert task.headline(reloaded.metrics)
    rates = [float(row["learning_rate"]) for row in read_history(run.path / "history.csv")]
    expected = cfg.train.learning_rate * (0.02 if cfg.train.lr_schedule == "cosine" else 1.0)  # after the last epoch
    assert rates == [pytest.approx(expected, rel=1e-3)]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_task_has_a_default_template_and_summary(name):
    assert name in config.templates()
    assert REGISTRY[name].summary
    assert load_config(name).task == name
