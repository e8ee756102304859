"""One test suite for every task in the registry: a new task gets this coverage for free.

Each task trains from its own template with its ``tiny`` overrides for one epoch (the
session's shared tiny run, ``tiny_runs`` in conftest.py: the other test modules read the
same runs), the run is reloaded from disk in a fresh object, and ``predict`` must give the
same output.
"""

from __future__ import annotations

import pytest
from conftest import tiny_config

from seqapp import config
from seqapp.tasks import REGISTRY, latest_run, load_config


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_task_trains_saves_reloads_and_predicts_the_same(name, tiny_runs):
    from seqapp.training import read_history

    task = REGISTRY[name]()
    assert task.tiny, f"{name} has no 'tiny' settings for the shared test"
    cfg = tiny_config(name)
    run = tiny_runs(name)  # trained with cfg, in a folder of its own
    options = task.tiny.get("options", {})
    before = list(task.predict(run, task.tiny.get("inputs", []), **options))
    assert before, "predict printed nothing"

    reloaded = latest_run(run.path.parents[1], name)
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
