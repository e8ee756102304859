"""Acceptance measurements of the sine task: the default template and two real series.

    python bench/sine_real_data.py                 # all three cases
    python bench/sine_real_data.py --only temps    # one case: sine, temps or air

Trains each case from its template (timing the whole ``train`` call), then prints the
test errors beside the naive baselines (and the noise floor for synthetic data) as a
Markdown table, also written to ``bench/results/sine_real_data.md``. The real data sets
are read from ``../shared/data/timeseries`` and a case is skipped when its file is absent.
Nothing here asserts a speed or a score; the slow tests in ``tests/test_sine.py`` do the
pass/fail checks.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT.parent / "shared" / "data" / "timeseries"

CASES = {
    "sine": ("sine", [], None),
    "temps": ("series-lstm", ["data.column=Temp"], SERIES / "daily-min-temperatures.csv"),
    "air": ("series-lstm", ["data.column=value", "data.window=12"], SERIES / "AirPassengers.csv"),
    "air-diff": ("series-lstm", ["data.column=value", "data.window=12", "data.difference=true"],
                 SERIES / "AirPassengers.csv"),
}


def run_case(name: str, out: Path) -> list[str] | None:
    """Train one case and return its table rows (None when its data file is absent)."""
    from seqapp.tasks import load_config
    from seqapp.training import train

    template, overrides, path = CASES[name]
    if path is not None and not path.exists():
        print(f"skipping {name}: {path} not found")
        return None
    values = {"data.path": str(path)} if path is not None else None
    cfg = load_config(template, overrides, values)
    started = time.perf_counter()
    run = train(cfg, out, name=name, verbose=0, log=print)
    seconds = time.perf_counter() - started
    metrics = run.metrics
    test = metrics["test"]
    rows = {"model": test, "last value": metrics["baseline_last_value"]["test"]}
    if "test" in metrics.get("baseline_seasonal", {}):
        rows[f"seasonal, period {metrics['seasonal_period']}"] = metrics["baseline_seasonal"]["test"]
    if "noise_floor" in metrics:
        rows["noise floor (sd^2)"] = metrics["noise_floor"]
        rows["noise (realised)"] = metrics["noise_realised"]["test"]
    source = path.name if path is not None else "synthetic"
    settings = " ".join(overrides) or "defaults"
    where = f"{template} on {source} ({settings}), {metrics['epochs_trained']} epochs, {seconds:.0f} s"
    return [f"| {where} | {label} | {f['mse']:.5g} | {f['mae']:.5g} | {f['rmse']:.5g} |" for label, f in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="run only this case (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runs", help="where the runs go")
    args = parser.parse_args()

    from seqapp import backend

    backend.start()
    lines = ["| run | predictor | test MSE | test MAE | test RMSE |", "| --- | --- | --- | --- | --- |"]
    for name in args.only or list(CASES):
        lines.extend(run_case(name, args.out) or [])
    table = "\n".join(lines)
    cores = len(os.sched_getaffinity(0))
    report = f"Sine task acceptance measurements ({cores} CPU cores visible; timings include start-up)\n\n{table}\n"
    print(report)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "sine_real_data.md").write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
