"""Time-series regression: forecast the next values of noisy sine waves or of a CSV column.

Data is either synthetic (``sin(2*pi*f*t + phase) + noise``, one wave per series, drawn
from the ``data`` settings) or one numeric column of a CSV file. Each series is split by
time: train, then validation, then test. An input is a window of past values; its target
is the next ``horizon`` values (``target: next``) or, at every position of the window,
the value after it (``target: sequence``). Normalisation statistics come from the
training part only. Forecasting feeds each prediction back one step at a time while the
recurrent state is carried, so the window is never re-run.

This module holds the task, its model, forecasting and its plots; reading, splitting,
windowing and the naive baselines live in :mod:`seqapp.tasks.series_data`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seqapp.config import Config
from seqapp.errors import SeqappError
from seqapp.files import COUNT, FLAG, INTEGER, NUMBER, TEXT, list_of, nullable, one_of
from seqapp.plots import pyplot, save_figure
from seqapp.sampling import StepFunction
from seqapp.tasks.base import JSON_OUTPUT, METRIC, RANDOM_SEED, Objective, PredictOption, Task, figure, worst_first
from seqapp.tasks.regression_model import series_model
from seqapp.tasks.series_data import (
    SeriesSplits,
    SineDataConfig,
    describe_periods,
    detect_period,
    error_figures,
    from_model,
    model_values,
    read_csv_series,
    read_history,
    split_ranges,
    split_targets,
    split_windows,
    synthetic_series,
    target_places,
    window_starts,
)

DEFAULT_HORIZON = 20  # forecast steps when --horizon is not given


class Sine(Task):
    """Regression on windows of a time series; ``seqapp predict --horizon N`` forecasts."""

    name: ClassVar[str] = "sine"
    summary: ClassVar[str] = "forecast noisy sine waves or a numeric CSV column (time-series regression)"
    DataConfig: ClassVar[type] = SineDataConfig
    predict_options: ClassVar[tuple[PredictOption, ...]] = (
        PredictOption("horizon", int, f"Forecast this many steps (default {DEFAULT_HORIZON})."),
        PredictOption("plot", Path, "Write a PNG plot of the history and the forecast here."),
        RANDOM_SEED,
        JSON_OUTPUT,
        PredictOption("data", Path, "Forecast from the end of this history instead of the run's own series: a "
                                    "CSV file read with the run's column rules, or numbers one per line; '-' "
                                    "reads stdin."),
    )
    takes_history: ClassVar[bool] = True
    preprocessing_fields: ClassVar[dict] = {
        "mean": NUMBER, "std": NUMBER, "window": COUNT, "horizon": COUNT, "target": one_of("next", "sequence"),
        "difference?": FLAG, "periods": list_of(nullable(INTEGER)), "name": TEXT, "synthetic": FLAG}
    metrics_fields: ClassVar[dict] = {
        "test?": {"mse": METRIC}, "if test": {"baseline_last_value": {"test": {"mse": METRIC}}},
        "baseline_seasonal?": {"test?": {"mse": METRIC}}, "noise_floor?": {"mse": METRIC}}
    tiny: ClassVar[dict] = {
        "set": ["data.count=4", "data.length=120", "data.window=10", "model.units=8", "train.batch_size=32"],
        "inputs": [],
        "options": {"horizon": 5},
    }

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        data = cfg.data
        for key in ("frequency", "amplitude"):
            low_high = getattr(data, key)
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                raise SeqappError(f"data.{key}={low_high} must be a range [low, high] with low <= high, "
                                  f"e.g. --set data.{key}=[0.02,0.05]")
        if data.target == "sequence" and data.horizon != 1:
            raise SeqappError("data.target=sequence predicts one value per position; "
                              "set data.horizon=1 or use data.target=next")
        if data.target == "sequence" and cfg.model.bidirectional:
            raise SeqappError("model.bidirectional=true cannot be used with data.target=sequence: each "
                              "position must not see the future; set model.bidirectional=false")

    # -- data -------------------------------------------------------------------------
    def load_data(self, cfg: Config) -> SeriesSplits:
        """The series (synthetic or from CSV) with each one's train / val / test ranges."""
        data = cfg.data
        if data.path is None:
            series, clean = synthetic_series(data, data.count, data.random_seed)
            dates, name, source = None, "sine", f"the synthetic series (data.length={data.length})"
        else:
            values, dates, name = read_csv_series(data.path, data.column, data.date_column)
            series, clean, source = [values], None, str(data.path)
        ranges = [split_ranges(len(values), data, source) for values in series]
        return SeriesSplits(train=[r[0] for r in ranges], val=[r[1] for r in ranges], test=[r[2] for r in ranges],
                            series=series, clean=clean, dates=dates, name=name)

    def fit_preprocessing(self, cfg: Config, splits: SeriesSplits) -> dict:
        data = cfg.data
        train_parts = [values[begin:end] for values, (begin, end) in zip(splits.series, splits.train)]
        if data.difference:
            train_parts = [np.diff(part) for part in train_parts]
        train_values = np.concatenate(train_parts)
        std = float(train_values.std())
        periods = [data.period or detect_period(values[begin:end])
                   for values, (begin, end) in zip(splits.series, splits.train)]
        lead = data.window + data.difference
        starts = [window_starts(begin, end, lead, data.horizon, data.stride) for begin, end in splits.train]
        return {
            "train_windows": int(sum(len(s) for s in starts)),
            "mean": float(train_values.mean()),
            "std": std if std > 1e-12 else 1.0,  # a constant series: keep the scale
            "window": cfg.data.window,
            "horizon": cfg.data.horizon,
            "target": cfg.data.target,
            "difference": data.difference,
            "periods": periods,
            "name": splits.name,
            "synthetic": cfg.data.path is None,
        }

    def datasets(self, cfg: Config, prep: dict, splits: SeriesSplits) -> tuple[Any, Any]:
        from seqapp.pipeline import make_dataset

        x, y = split_windows(splits, splits.train, prep, cfg.data.stride)
        train = make_dataset(x, y, cfg.train.batch_size, shuffle=True, seed=cfg.train.random_seed)
        val_x, val_y = split_windows(splits, splits.val, prep)
        val = make_dataset(val_x, val_y, cfg.train.batch_size, shuffle=False) if len(val_x) else None
        return train, val

    # -- model ------------------------------------------------------------------------
    def build_model(self, cfg: Config, prep: dict) -> Any:
        return series_model(cfg.model, prep["horizon"], sequence=prep["target"] == "sequence")

    def objective(self, cfg: Config, prep: dict) -> Objective:
        return Objective(loss="mse", metrics=["mae"])

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, run: Any, splits: SeriesSplits, engine: str = "tf", errors: int = 0) -> dict:
        """MSE / MAE / RMSE in original units beside naive baselines (and the noise floor); the
        ``errors`` windows of the main split whose forecast has the largest squared error."""
        prep = run.preprocessing
        if splits.periods is not None:  # new data: its own seasonal period
            prep = {**prep, "periods": splits.periods}
        metrics: dict[str, Any] = {"units": f"original units of {splits.name or prep['name']}",
                                   "horizon": prep["horizon"]}
        worst: list[dict] = []
        for split in ("val", "test"):
            targets = split_targets(splits, getattr(splits, split), prep)
            if not len(targets.y):
                continue
            predicted = predict_windows(run, targets.x, targets.last_value[:, 0])
            metrics[split] = error_figures(predicted, targets.y)
            if errors:
                worst = worst_windows(splits, target_places(splits, getattr(splits, split), prep), predicted,
                                      targets.y, errors)
            metrics.setdefault("baseline_last_value", {})[split] = error_figures(targets.last_value, targets.y)
            if targets.seasonal is not None:
                metrics.setdefault("baseline_seasonal", {})[split] = error_figures(targets.seasonal, targets.y)
            if targets.clean is not None:
                metrics.setdefault("noise_realised", {})[split] = error_figures(targets.clean, targets.y)
        metrics["seasonal_period"] = describe_periods(prep["periods"])
        if prep["synthetic"] and not splits.source:
            sd = run.config.data.noise_sd
            metrics["noise_floor"] = {"mse": sd**2, "mae": sd * math.sqrt(2 / math.pi), "rmse": sd}
            if "test" in metrics and sd > 0:
                metrics["test_mse_over_noise_floor"] = round(metrics["test"]["mse"] / sd**2, 4)
        metrics["points"] = {split: int(sum(end - begin for begin, end in getattr(splits, split)))
                             for split in (("test",) if splits.source else ("train", "val", "test"))}
        return {**metrics, "worst": worst} if errors else metrics

    def new_data(self, run: Any, path: Path) -> SeriesSplits:
        """The CSV column the run's rules choose (data.column, else the last numeric one) as one series,
        all of it the test split; its seasonal period is data.period, else detected on it."""
        data, prep = run.config.data, run.preprocessing
        values, dates, name = read_csv_series(path, data.column, data.date_column)
        needed = prep["window"] + prep["horizon"] + bool(prep.get("difference"))
        if len(values) < needed:
            raise SeqappError(f"{path} has {len(values)} values, too few for one window: the run reads "
                              f"{prep['window']} values{' (as changes, one more)' if prep.get('difference') else ''} "
                              f"and forecasts {prep['horizon']}; give at least {needed} values")
        n = len(values)
        return SeriesSplits(train=[(0, 0)], val=[(0, 0)], test=[(0, n)], series=[values], dates=dates, name=name,
                            source=str(path), periods=[data.period or detect_period(values)])

    def format_worst(self, records: list[dict]) -> list[str]:
        lines = []
        for record in records:
            where = f"series {record['series']} " if "series" in record else ""
            truth = " ".join(f"{value:.5g}" for value in record["truth"])
            forecast = " ".join(f"{value:.5g}" for value in record["forecast"])
            lines.append(f"mse {record['mse']:.5g}  {where}at {record['at']}: truth {truth}  forecast {forecast}")
        return lines

    def headline(self, metrics: dict) -> str:
        if "test" not in metrics:
            return ""
        parts = [f"last value {figure(metrics['baseline_last_value']['test']['mse'], '.4g')}"]
        if "test" in metrics.get("baseline_seasonal", {}):
            parts.append(f"seasonal {figure(metrics['baseline_seasonal']['test']['mse'], '.4g')}")
        if "noise_floor" in metrics:
            parts.append(f"noise floor {figure(metrics['noise_floor']['mse'], '.4g')}")
        return f"test MSE {figure(metrics['test']['mse'], '.4g')} ({', '.join(parts)})"

    def format_metrics(self, metrics: dict) -> list[str]:
        """A table per split: the model, the baselines and the noise floor side by side."""
        lines = [f"errors in {metrics.get('units', 'original units')}, horizon {metrics.get('horizon', 1)}; "
                 f"seasonal period {metrics.get('seasonal_period')}"]
        for split in ("val", "test"):
            if split not in metrics:
                continue
            rows = {"model": metrics[split], "last value": metrics["baseline_last_value"][split]}
            if split in metrics.get("baseline_seasonal", {}):
                rows["seasonal"] = metrics["baseline_seasonal"][split]
            if split in metrics.get("noise_realised", {}):
                rows["noise (realised)"] = metrics["noise_realised"][split]
            if "noise_floor" in metrics:
                rows["noise floor (sd^2)"] = metrics["noise_floor"]
            lines.append(f"{split} ({metrics.get('points', {}).get(split, '?')} points):")
            lines.append(f"  {'':<19}{'mse':>12}{'mae':>12}{'rmse':>12}")
            for label, figures in rows.items():
                lines.append(f"  {label:<19}" + "".join(f"{figures[key]:>12.5g}" for key in ("mse", "mae", "rmse")))
        if "test_mse_over_noise_floor" in metrics:
            lines.append(f"test MSE / noise floor: {metrics['test_mse_over_noise_floor']:.3f}")
        if "epochs_trained" in metrics:
            lines.append(f"epochs trained: {metrics['epochs_trained']}")
        return lines

    def plots(self, run: Any, splits: SeriesSplits, folder: Path) -> None:
        """``test_forecast.png``: one-step and free-running forecasts over the test split."""
        plot_test(run, splits, Path(folder) / "test_forecast.png")

    def serving_module(self, run: Any) -> Any:
        """``seqapp export``: raw histories in, forecasts out (see ``regression_serving``)."""
        from seqapp.tasks.regression_serving import SeriesServing

        return SeriesServing(run)

    # -- forecasting ------------------------------------------------------------------
    def check_inputs(self, inputs: list[str], horizon: int | None = None, data: Path | None = None,
                     random_seed: int | None = None, history: list | None = None, **opts: Any) -> None:
        if inputs:
            raise SeqappError("a sine run forecasts from the end of its own series and takes no inputs; to "
                              "forecast from another history, give it with --data FILE ('-' reads stdin), e.g. "
                              "'seqapp predict --data history.csv --horizon 50'")
        if horizon is not None and horizon < 1:
            raise SeqappError(f"--horizon {horizon} must be at least 1; e.g. --horizon 50")
        if (data is not None or history is not None) and random_seed is not None:
            raise SeqappError("--random-seed draws a fresh synthetic series to forecast from, and a history was "
                              "given (--data); choose one")

    def check_run_options(self, run: Any, data: Path | None = None, history: list | None = None,
                          **opts: Any) -> None:
        """A history (``--data``, or the server's ``history``) read and checked against the run's window;
        kept for :meth:`predict`, so that stdin is read once."""
        if data is not None:
            values, dates = read_history(data, run.config.data.column, run.config.data.date_column)
            self.histories = {str(data): (check_history(run, values, f"the history in {data}"), dates)}
        if history is not None:
            check_history(run, history, "the history")

    def predict(self, run: Any, inputs: list[str], **opts: Any) -> Iterator[str]:
        """``step,value`` lines forecasting ``horizon`` steps past the end of the series: the run's
        own, or the history given (``data``: a file or '-', read by :meth:`check_run_options`;
        ``history``: the numbers)."""
        self.check_inputs(inputs, **opts)
        steps = opts["horizon"] if opts.get("horizon") is not None else DEFAULT_HORIZON
        if opts.get("data") is not None:
            if str(opts["data"]) not in getattr(self, "histories", {}):
                self.check_run_options(run, data=opts["data"])
            (history, dates), truth = self.histories[str(opts["data"])], None
        elif opts.get("history") is not None:
            history, truth, dates = check_history(run, opts["history"], "the history"), None, None
        else:
            history, truth, dates = forecast_history(run, steps, opts.get("random_seed"))
        values = forecast(run, history, steps)
        if opts.get("plot"):
            plot_forecast(run, history, truth, values, dates, Path(opts["plot"]))
        if opts.get("json"):
            yield json.dumps({"after": dates[-1] if dates else len(history), "steps": steps,
                              "forecast": [float(f"{v:.6g}") for v in values]})
            return
        yield "step,value"
        for step, value in enumerate(values, start=1):
            yield f"{step},{value:.6g}"


# -- model ----------------------------------------------------------------------------------
def step_function(run: Any) -> StepFunction:
    """A compiled single-step model that shares the run's trained weights."""
    import tensorflow as tf

    step_model = series_model(run.config.model, run.preprocessing["horizon"], step=True)
    return StepFunction.sharing_weights(step_model, run.model, tf.TensorSpec([None, None, 1], tf.float32))


# -- forecasting ----------------------------------------------------------------------------
def predict_windows(run: Any, x: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The model's next ``horizon`` values (original units) for windows ``x`` (see ``model_values``)."""
    output = run.model.predict(x, batch_size=512, verbose=0)
    if run.preprocessing["target"] == "sequence":
        output = output[:, -1, :]
    return from_model(output, run.preprocessing, last)


def forecast(run: Any, history: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` values after ``history`` (original units), each prediction fed back in.

    The last window of the history is read once from a zero state, as in training; then
    each forecast chunk of ``horizon`` values is fed back while the state is carried. A
    bidirectional model cannot carry state, so it re-reads the latest window instead.
    """
    prep = run.preprocessing
    window = prep["window"]
    history = np.asarray(history, np.float64)
    if len(history) < window + prep.get("difference", False):
        raise SeqappError(f"the series has {len(history)} values but the model reads windows of {window}")
    recent = model_values(history, prep)[-window:]
    predicted: list[float] = []
    if run.config.model.bidirectional:
        while len(predicted) < steps:
            chunk = run.model.predict(recent[None, -window:, None], verbose=0)[0]
            predicted.extend(chunk)
            recent = np.concatenate([recent, chunk])
    else:
        step = step_function(run)
        chunk, states = step(recent[None, :, None], step.zero_states(1))
        while True:
            predicted.extend(chunk[0])
            if len(predicted) >= steps:
                break
            chunk, states = step(chunk[:, :, None], states)
    return from_model(np.asarray(predicted)[None, :steps], prep, history[-1:])[0]


def forecast_history(run: Any, steps: int,
                     random_seed: int | None) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """The series to forecast from, its true continuation when known, and its date labels.

    That is series 0 of the run's data, or with ``random_seed`` a fresh synthetic series
    drawn from the same settings (a wave the model has never seen).
    """
    data = run.config.data
    if random_seed is not None:
        if data.path is not None:
            raise SeqappError("--random-seed draws a fresh synthetic series; this run was trained on "
                              f"{data.path}, so leave --random-seed out")
        noisy, clean = synthetic_series(data, 1, random_seed + 1_000_003, extra=steps)  # apart from the training seeds
        return noisy[0], clean[0][data.length:], None
    if data.path is None:
        noisy, clean = synthetic_series(data, 1, data.random_seed, extra=steps)
        return noisy[0], clean[0][data.length:], None
    values, dates, _ = read_csv_series(data.path, data.column, data.date_column)
    return values, None, dates


def check_history(run: Any, history: Any, what: str) -> np.ndarray:
    """``history`` as float64 values, refused (SeqappError) when it is not a list of finite numbers,
    is shorter than the run reads, or lies so far from the training data that its normalised values
    overflow float32."""
    prep = run.preprocessing
    if not isinstance(history, (list, tuple, np.ndarray)) or not all(
            isinstance(value, (int, float, np.number)) and not isinstance(value, bool) for value in history):
        raise SeqappError(f"{what} is not a list of numbers; give the values oldest first")
    values = np.asarray(history, np.float64)
    needed = prep["window"] + bool(prep.get("difference"))
    if len(values) < needed:
        also = " and their changes" if prep.get("difference") else ""
        raise SeqappError(f"{what} has {len(values)} value(s); the run reads the last {needed}{also}, so give at "
                          f"least {needed}, oldest first")
    if not np.isfinite(values).all():
        raise SeqappError(f"{what} holds a value that is not a finite number; give finite numbers")
    with np.errstate(over="ignore"):
        if not np.isfinite(model_values(values[-needed:], prep)).all():
            raise SeqappError(f"{what} holds values too far from the run's training data (mean {prep['mean']:.6g}, "
                              f"standard deviation {prep['std']:.6g}) to be normalised; give values on its scale")
    return values


def worst_windows(splits: SeriesSplits, places: list[tuple[int, int]], predicted: np.ndarray, truth: np.ndarray,
                  count: int) -> list[dict]:
    """``evaluate --errors``: the ``count`` windows whose forecast has the largest mean squared error,
    worst first: where the forecast starts (a date label where the data has them, else the position),
    the true values and the forecast."""
    errors = np.mean((np.asarray(predicted, np.float64) - truth) ** 2, axis=1)
    records = []
    for i in worst_first(errors.tolist(), count):
        series, start = places[i]
        at = splits.dates[start] if splits.dates and series == 0 else start
        records.append({**({"series": series} if len(splits.series) > 1 else {}), "at": at,
                        "mse": round(float(errors[i]), 6), "truth": [round(float(v), 6) for v in truth[i]],
                        "forecast": [round(float(v), 6) for v in predicted[i]]})
    return records


# -- plots ----------------------------------------------------------------------------------
def plot_forecast(run: Any, history: np.ndarray, truth: np.ndarray | None, values: np.ndarray,
                  dates: list[str] | None, path: Path) -> None:
    """History (the last part), the true continuation where known, and the forecast."""
    plt = pyplot()
    shown = min(len(history), max(2 * run.preprocessing["window"], 2 * len(values), 100))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(np.arange(-shown + 1, 1), history[-shown:], color="tab:blue", lw=1, label="history")
    steps = np.arange(1, len(values) + 1)
    if truth is not None:
        ax.plot(steps, truth[:len(values)], color="tab:green", lw=1.5, label="truth (noise-free)")
    ax.plot(np.concatenate([[0], steps]), np.concatenate([history[-1:], values]), color="tab:red", lw=1.8,
            label=f"forecast ({len(values)} steps)")
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    after = f" after {dates[-1]}" if dates else ""
    ax.set_xlabel(f"steps{after}")
    ax.set_ylabel(run.preprocessing["name"])
    ax.set_title(f"{run.preprocessing['name']}: forecast of run {Path(run.path).name}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)


def plot_test(run: Any, splits: SeriesSplits, path: Path) -> None:
    """Series 0's test split: truth, one-step forecasts, and a forecast fed only its own output."""
    plt = pyplot()
    prep = run.preprocessing
    values, (begin, end) = splits.series[0], splits.test[0]
    shown = min(end - begin, 400)
    targets = split_targets(SeriesSplits(train=[], val=[], test=[], series=[values]), [(begin, begin + shown)],
                            {**prep, "periods": [None]})
    t = np.arange(begin, begin + shown)
    one_step = predict_windows(run, targets.x, targets.last_value[:, 0])[:, 0] if len(targets.x) else np.zeros(0)
    free = forecast(run, values[:begin], shown)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(t, values[begin:begin + shown], color="tab:blue", lw=1, label="truth")
    ax.plot(t[len(t) - len(one_step):], one_step, color="tab:orange", lw=1.2, label="one-step forecast")
    ax.plot(t, free, color="tab:red", lw=1.2, ls="--", label="free-running forecast")
    if splits.dates:
        ticks = np.linspace(begin, begin + shown - 1, 5).astype(int)
        ax.set_xticks(ticks, [splits.dates[i] for i in ticks])
    ax.set_xlabel("time step" if not splits.dates else "")
    ax.set_ylabel(prep["name"])
    which = f" of series 1 (of {len(splits.series)})" if len(splits.series) > 1 else ""
    ax.set_title(f"{prep['name']}: test split{which}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)

