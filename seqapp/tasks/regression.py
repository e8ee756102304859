"""Time-series regression: forecast the next values of noisy sine waves or of a CSV column.

Data is either synthetic (``sin(2*pi*f*t + phase) + noise``, one wave per series, drawn
from the ``data`` settings) or one numeric column of a CSV file. Each series is split by
time: train, then validation, then test. An input is a window of past values; its target
is the next ``horizon`` values (``target: next``) or, at every position of the window,
the value after it (``target: sequence``). Normalisation statistics come from the
training part only. Forecasting feeds each prediction back one step at a time while the
recurrent state is carried, so the window is never re-run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from seqapp import datafiles
from seqapp.config import Config, at_least, between, one_of
from seqapp.errors import SeqappError
from seqapp.layers import apply_stack, recurrent_stack, state_size
from seqapp.sampling import StepFunction
from seqapp.tasks.base import Splits, Task

DEFAULT_HORIZON = 20  # forecast steps when --horizon is not given
MISSING = {"", "na", "nan", "n/a", "null", "none", "?", "-"}


@dataclass
class SineData:
    """Where the series comes from (synthetic sines or a CSV file) and how it is windowed."""

    path: str | None = None  # CSV file with a header row; None = synthetic sine waves
    column: str | None = None  # value column of the CSV; None = the last numeric column
    date_column: str | None = None  # kept for plots; None = the first non-numeric column, if any
    window: int = field(default=50, metadata=at_least(1))
    horizon: int = field(default=1, metadata=at_least(1))
    target: str = field(default="next", metadata=one_of("next", "sequence"))
    stride: int = field(default=1, metadata=at_least(1))
    difference: bool = False  # model the change from one step to the next (series with a trend)
    period: int | None = field(default=None, metadata=at_least(2))  # None: detect by autocorrelation
    val_fraction: float = field(default=0.15, metadata=between(0.0, 0.5, high_open=True))
    test_fraction: float = field(default=0.15, metadata=between(0.0, 0.5, low_open=True, high_open=True))
    # synthetic data only
    count: int = field(default=40, metadata=at_least(1))
    length: int = field(default=1000, metadata=at_least(2))
    frequency: list[float] = field(default_factory=lambda: [0.02, 0.05],  # cycles per step, below 0.5
                                   metadata=between(0.0, 0.5, low_open=True, high_open=True))
    amplitude: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata=at_least(0.0))
    phase: float | None = None  # radians; None = a random phase per series
    noise_sd: float = field(default=0.1, metadata=at_least(0.0))
    random_seed: int = field(default=0, metadata=at_least(0))


@dataclass
class SeriesSplits(Splits):
    """``train`` / ``val`` / ``test`` hold one ``(begin, end)`` index range per series."""

    series: list[np.ndarray] = field(default_factory=list)
    clean: list[np.ndarray] | None = None  # the noise-free waves (synthetic data only)
    dates: list[str] | None = None  # one label per point of series 0 (CSV data only)
    name: str = ""  # what the values are: the CSV column, or "sine"


class Sine(Task):
    """Regression on windows of a time series; ``seqapp predict --horizon N`` forecasts."""

    name: ClassVar[str] = "sine"
    summary: ClassVar[str] = "forecast noisy sine waves or a numeric CSV column (time-series regression)"
    DataConfig: ClassVar[type] = SineData
    predict_options: ClassVar[frozenset[str]] = frozenset({"horizon", "plot", "random_seed", "json"})
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
        from seqapp.training import make_dataset

        x, y = split_windows(splits, splits.train, prep, cfg.data.stride)
        train = make_dataset(x, y, cfg.train.batch_size, shuffle=True, seed=cfg.train.random_seed)
        val_x, val_y = split_windows(splits, splits.val, prep)
        val = make_dataset(val_x, val_y, cfg.train.batch_size, shuffle=False) if len(val_x) else None
        return train, val

    # -- model ------------------------------------------------------------------------
    def build_model(self, cfg: Config, prep: dict) -> Any:
        from seqapp.training import optimizer

        model = series_model(cfg.model, prep["horizon"], sequence=prep["target"] == "sequence")
        steps_per_epoch = math.ceil(prep.get("train_windows", 1) / cfg.train.batch_size)
        model.compile(optimizer=optimizer(cfg.train, steps_per_epoch), loss="mse", metrics=["mae"])
        return model

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, run: Any, splits: SeriesSplits) -> dict:
        """MSE / MAE / RMSE in original units beside naive baselines (and the noise floor)."""
        prep = run.preprocessing
        metrics: dict[str, Any] = {"units": f"original units of {prep['name']}", "horizon": prep["horizon"]}
        for split in ("val", "test"):
            targets = split_targets(splits, getattr(splits, split), prep)
            if not len(targets.y):
                continue
            metrics[split] = error_figures(predict_windows(run, targets.x, targets.last_value[:, 0]), targets.y)
            metrics.setdefault("baseline_last_value", {})[split] = error_figures(targets.last_value, targets.y)
            if targets.seasonal is not None:
                metrics.setdefault("baseline_seasonal", {})[split] = error_figures(targets.seasonal, targets.y)
            if targets.clean is not None:
                metrics.setdefault("noise_realised", {})[split] = error_figures(targets.clean, targets.y)
        metrics["seasonal_period"] = describe_periods(prep["periods"])
        if prep["synthetic"]:
            sd = run.config.data.noise_sd
            metrics["noise_floor"] = {"mse": sd**2, "mae": sd * math.sqrt(2 / math.pi), "rmse": sd}
            if "test" in metrics and sd > 0:
                metrics["test_mse_over_noise_floor"] = round(metrics["test"]["mse"] / sd**2, 4)
        metrics["points"] = {split: int(sum(end - begin for begin, end in getattr(splits, split)))
                             for split in ("train", "val", "test")}
        return metrics

    def headline(self, metrics: dict) -> str:
        if "test" not in metrics:
            return ""
        parts = [f"last value {metrics['baseline_last_value']['test']['mse']:.4g}"]
        if "test" in metrics.get("baseline_seasonal", {}):
            parts.append(f"seasonal {metrics['baseline_seasonal']['test']['mse']:.4g}")
        if "noise_floor" in metrics:
            parts.append(f"noise floor {metrics['noise_floor']['mse']:.4g}")
        return f"test MSE {metrics['test']['mse']:.4g} ({', '.join(parts)})"

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

    # -- forecasting ------------------------------------------------------------------
    def predict(self, run: Any, inputs: list[str], **opts: Any) -> Iterator[str]:
        """``step,value`` lines forecasting ``horizon`` steps past the end of the series."""
        if inputs:
            raise SeqappError("a sine run forecasts from the end of its own series and takes no inputs; "
                              "use e.g. 'seqapp predict --horizon 50'")
        steps = opts["horizon"] if opts.get("horizon") is not None else DEFAULT_HORIZON
        if steps < 1:
            raise SeqappError(f"--horizon {steps} must be at least 1")
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


# -- synthetic data -----------------------------------------------------------------------
def synthetic_series(data: SineData, count: int, seed: int,
                     extra: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` noisy sine waves of ``data.length`` points and their noise-free versions.

    Each series has its own frequency (cycles per step), amplitude and phase drawn from
    the ranges in ``data``. ``extra`` points more of the clean wave are appended, for
    showing the truth after the series ends; the noisy values never include them.
    """
    rng = np.random.default_rng([seed, 0])
    frequencies = rng.uniform(*data.frequency, size=count)
    amplitudes = rng.uniform(*data.amplitude, size=count)
    phases = rng.uniform(0, 2 * np.pi, size=count) if data.phase is None else np.full(count, data.phase)
    t = np.arange(data.length + extra)
    clean = [a * np.sin(2 * np.pi * f * t + p) for f, a, p in zip(frequencies, amplitudes, phases)]
    noisy = [wave[:data.length] + np.random.default_rng([seed, 1, i]).normal(0, data.noise_sd, data.length)
             for i, wave in enumerate(clean)]
    return noisy, clean


# -- CSV data -----------------------------------------------------------------------------
def read_csv_series(path: str | Path, column: str | None,
                    date_column: str | None) -> tuple[np.ndarray, list[str] | None, str]:
    """One numeric column of a CSV file with a header, its date labels, and its name."""
    text = datafiles.read_text(path)
    rows = list(csv.reader(io.StringIO(text), dialect=sniff_dialect(text)))
    line_numbers = line_numbers_of(text, len(rows))
    header = [name.strip() for name in rows[0]]
    body = [(line, row) for line, row in zip(line_numbers[1:], rows[1:]) if any(cell.strip() for cell in row)]
    if not body:
        raise SeqappError(f"{path} has a header but no data rows; add one row per time step")
    value_index = find_value_column(path, header, body, column)
    date_index = find_date_column(path, header, body, date_column, value_index)
    name = header[value_index]
    values = np.array([parse_value(path, line, row, value_index, name) for line, row in body])
    dates = None
    if date_index is not None:
        dates = [row[date_index].strip() if date_index < len(row) else "" for _, row in body]
    return values, dates, name


def sniff_dialect(text: str) -> Any:
    """Comma, semicolon or tab separated, judged from the header line (comma if unsure)."""
    try:
        return csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        return csv.excel


def line_numbers_of(text: str, count: int) -> list[int]:
    """The file line on which each CSV record starts (quoted cells may span lines)."""
    reader = csv.reader(io.StringIO(text), dialect=sniff_dialect(text))
    numbers, previous_end = [], 0
    for _ in range(count):
        next(reader)
        numbers.append(previous_end + 1)
        previous_end = reader.line_num
    return numbers


def is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def find_value_column(path: Any, header: list[str], body: list, column: str | None) -> int:
    """Index of ``column``, or of the last column whose first cells are mostly numbers."""
    if column is not None:
        if column not in header:
            import difflib

            close = difflib.get_close_matches(column, header, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SeqappError(f"{path} has no column '{column}'{hint}; its columns are: {', '.join(header)}; "
                              "set data.column to one of them")
        return header.index(column)
    sample = [row for _, row in body[:20]]
    # a column of numbers with a typo in it is still the value column: its bad cell is reported later
    numeric = [i for i in range(len(header))
               if 2 * sum(i < len(row) and is_number(row[i]) for row in sample) > len(sample)]
    if not numeric:
        raise SeqappError(f"{path} has no numeric column (columns: {', '.join(header)}); "
                          "set data.column to the column that holds the values")
    return numeric[-1]


def find_date_column(path: Any, header: list[str], body: list, date_column: str | None, value_index: int) -> int | None:
    """Index of ``date_column``, or of the first non-numeric column other than the values."""
    if date_column is not None:
        if date_column not in header:
            raise SeqappError(f"{path} has no column '{date_column}'; its columns are: {', '.join(header)}; "
                              "set data.date_column to one of them or to null")
        return header.index(date_column)
    first_row = body[0][1]
    for i in range(len(header)):
        if i != value_index and i < len(first_row) and first_row[i].strip() and not is_number(first_row[i]):
            return i
    return None


def parse_value(path: Any, line: int, row: list[str], index: int, name: str) -> float:
    """The number in ``row[index]``, or an error naming the line and the column."""
    cell = row[index].strip() if index < len(row) else ""
    if cell.lower() in MISSING:
        raise SeqappError(f"{path} line {line}: missing value in column '{name}'; fill it in or remove the row")
    try:
        value = float(cell)
    except ValueError:
        raise SeqappError(f"{path} line {line}: '{cell}' in column '{name}' is not a number; "
                          "fix the cell or choose another column with data.column") from None
    if not math.isfinite(value):
        raise SeqappError(f"{path} line {line}: '{cell}' in column '{name}' is not a finite number")
    return value


# -- splits and windows ---------------------------------------------------------------------
def split_ranges(n: int, data: SineData, source: str) -> list[tuple[int, int]]:
    """Chronological ``(begin, end)`` ranges of train, val and test for a series of ``n`` points."""
    n_test = max(data.horizon, round(n * data.test_fraction))
    n_val = round(n * data.val_fraction)
    n_train = n - n_val - n_test
    needed = data.window + data.horizon + data.difference
    if n_train < needed:
        minimum = math.ceil(needed / (1 - data.val_fraction - data.test_fraction)) + 1
        raise SeqappError(
            f"{source} has {n} values, too few for one training window: data.window={data.window} plus "
            f"data.horizon={data.horizon} need {needed} training values, so at least about {minimum} values "
            f"in all; lower data.window or give a longer series")
    return [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)]


def window_starts(begin: int, end: int, lead: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Positions ``t`` whose targets ``t .. t+horizon-1`` lie in ``[begin, end)``, with ``lead`` values before."""
    return np.arange(max(begin, lead), end - horizon + 1, stride)


def windows(values: np.ndarray, starts: np.ndarray, window: int, horizon: int,
            sequence: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``values[t-window : t]`` and targets: the next ``horizon`` values, or the inputs shifted by one."""
    x = values[starts[:, None] + np.arange(-window, 0)]
    if sequence:
        return x[..., None], values[starts[:, None] + np.arange(-window + 1, 1)][..., None]
    return x[..., None], values[starts[:, None] + np.arange(horizon)]


def normalise(values: np.ndarray, prep: dict) -> np.ndarray:
    return ((values - prep["mean"]) / prep["std"]).astype(np.float32)


def denormalise(values: np.ndarray, prep: dict) -> np.ndarray:
    return np.asarray(values, np.float64) * prep["std"] + prep["mean"]


def model_values(values: np.ndarray, prep: dict) -> np.ndarray:
    """What the model reads and predicts: the normalised values, or their normalised steps.

    With differencing, position ``t`` holds ``values[t] - values[t-1]`` (position 0 holds
    0 and is never read: windows start one value later).
    """
    if prep.get("difference"):
        values = np.diff(values, prepend=values[:1])
    return normalise(values, prep)


def from_model(output: np.ndarray, prep: dict, last: np.ndarray) -> np.ndarray:
    """Model outputs ``[n, horizon]`` in original units; ``last`` is each window's last value."""
    output = denormalise(output, prep)
    if prep.get("difference"):
        return np.asarray(last, np.float64)[:, None] + np.cumsum(output, axis=1)
    return output


def split_windows(splits: SeriesSplits, ranges: list, prep: dict, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Normalised training arrays for one split, all series together."""
    xs, ys = [], []
    for values, (begin, end) in zip(splits.series, ranges):
        starts = window_starts(begin, end, prep["window"] + prep.get("difference", False), prep["horizon"], stride)
        sequence = prep["target"] == "sequence"
        x, y = windows(model_values(values, prep), starts, prep["window"], prep["horizon"], sequence)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@dataclass
class Targets:
    """One split's evaluation windows: inputs, true next values and baseline forecasts."""

    x: np.ndarray  # normalised input windows [n, window, 1]
    y: np.ndarray  # true next values in original units [n, horizon]
    last_value: np.ndarray
    seasonal: np.ndarray | None
    clean: np.ndarray | None  # noise-free next values (synthetic data)


def split_targets(splits: SeriesSplits, ranges: list, prep: dict) -> Targets:
    """Every target of a split with its input window and naive forecasts (windows may reach back)."""
    window, horizon, periods = prep["window"], prep["horizon"], prep["periods"]
    parts: dict[str, list] = {"x": [], "y": [], "last": [], "seasonal": [], "clean": []}
    for i, (values, (begin, end)) in enumerate(zip(splits.series, ranges)):
        starts = window_starts(begin, end, window + prep.get("difference", False), horizon)
        x, _ = windows(model_values(values, prep), starts, window, horizon, sequence=False)
        parts["x"].append(x)
        parts["y"].append(values[starts[:, None] + np.arange(horizon)])
        parts["last"].append(np.repeat(values[starts - 1][:, None], horizon, axis=1))
        parts["seasonal"].append(seasonal_forecast(values, starts, horizon, periods[i]))
        if splits.clean is not None:
            parts["clean"].append(splits.clean[i][starts[:, None] + np.arange(horizon)])
    # series without a detected period fall back to the last value (said in seasonal_period)
    seasonal = (None if all(p is None for p in periods) else
                np.concatenate([s if s is not None else last for s, last in zip(parts["seasonal"], parts["last"])]))
    clean = np.concatenate(parts["clean"]) if parts["clean"] else None
    return Targets(np.concatenate(parts["x"]), np.concatenate(parts["y"]), np.concatenate(parts["last"]),
                   seasonal, clean)


def seasonal_forecast(values: np.ndarray, starts: np.ndarray, horizon: int, period: int | None) -> np.ndarray | None:
    """The value one period earlier (whole periods back, so it is always known); None without a period."""
    if period is None:
        return None
    steps = np.arange(horizon)
    back = period * (steps // period + 1)
    index = starts[:, None] + steps - back
    # a series too short for one period back falls back to its first value
    return values[np.maximum(index, 0)]


def detect_period(values: np.ndarray, min_lag: int = 2) -> int | None:
    """The seasonal period by autocorrelation of the linearly detrended series, or None.

    The period is the top of the first autocorrelation hump, after the curve first drops
    below zero, that reaches 80% of the highest peak within half the series.
    """
    n = len(values)
    max_lag = n // 2
    if max_lag <= min_lag:
        return None
    t = np.arange(n)
    residual = values - np.polyval(np.polyfit(t, values, 1), t)
    spectrum = np.fft.rfft(residual, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: max_lag + 1]
    if acf[0] <= 0:
        return None
    acf = acf / acf[0]
    below = np.nonzero(acf[1:] < 0)[0]
    if not len(below):
        return None
    first = int(below[0]) + 1
    # smooth over a sixteenth of a period (the first zero crossing is about a quarter period)
    width = max(1, first // 4)
    acf = np.convolve(acf, np.ones(width) / width, mode="same")
    peaks = [lag for lag in range(max(first, min_lag), max_lag)
             if acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1] and acf[lag] > 0.1]
    if not peaks:
        return None
    high = 0.8 * max(acf[lag] for lag in peaks)
    lag = next(lag for lag in peaks if acf[lag] >= high)
    # a broad, noisy hump (a yearly cycle in daily data) has many local peaks: take its top
    begin, end = lag, lag
    while begin > first and acf[begin - 1] >= high:
        begin -= 1
    while end < max_lag and acf[end + 1] >= high:
        end += 1
    return begin + int(np.argmax(acf[begin:end + 1]))


def describe_periods(periods: list[int | None]) -> Any:
    """The seasonal period for metrics: one number, or the range over many series."""
    known = [p for p in periods if p is not None]
    if len(periods) == 1:
        return periods[0]
    if not known:
        return None
    fallback = "; the others use the last value" if len(known) < len(periods) else ""
    return f"{min(known)}-{max(known)} (per series, {len(known)} of {len(periods)} detected{fallback})"


def error_figures(prediction: np.ndarray, truth: np.ndarray) -> dict:
    """MSE, MAE and RMSE of ``prediction`` against ``truth``."""
    error = np.asarray(prediction, np.float64) - np.asarray(truth, np.float64)
    mse = float(np.mean(error**2))
    return {"mse": round(mse, 6), "mae": round(float(np.mean(np.abs(error))), 6), "rmse": round(math.sqrt(mse), 6)}


# -- model ----------------------------------------------------------------------------------
def series_model(model_cfg: Any, horizon: int, sequence: bool = False, step: bool = False) -> Any:
    """Windows of values -> recurrent stack -> Dense(horizon).

    ``sequence=True`` predicts at every position (``return_sequences``). With
    ``step=True`` the same layers also take and return the recurrent states and output
    the last position's forecast: the single-step model for stateful forecasting. Both
    variants create their layers in the same order, so they share weights with
    ``set_weights``.
    """
    import keras

    values = keras.Input((None, 1), name="values")
    stack = recurrent_stack(model_cfg.cell, model_cfg.units, model_cfg.layers, model_cfg.dropout,
                            model_cfg.bidirectional, return_sequences=sequence and not step,
                            return_state=step, name="series")
    head = keras.layers.Dense(horizon, name="forecast")
    if not step:
        x, _ = apply_stack(stack, values)
        return keras.Model(values, head(x), name="series_model")
    state_inputs = [[keras.Input((model_cfg.units,), name=f"state_{layer}_{i}")
                     for i in range(state_size(model_cfg.cell))] for layer in range(model_cfg.layers)]
    x, states = apply_stack(stack, values, state_inputs)
    flat_inputs = [s for layer in state_inputs for s in layer]
    flat_states = [s for layer in states for s in layer]
    return keras.Model([values, *flat_inputs], [head(x), *flat_states], name="series_model_step")


def step_function(run: Any) -> StepFunction:
    """A compiled single-step model that shares the run's trained weights."""
    import tensorflow as tf

    model_cfg = run.config.model
    step_model = series_model(model_cfg, run.preprocessing["horizon"], step=True)
    step_model.set_weights(run.model.get_weights())
    shapes = [model_cfg.units] * (state_size(model_cfg.cell) * model_cfg.layers)
    return StepFunction(step_model, shapes, tf.TensorSpec([None, None, 1], tf.float32))


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


# -- plots ----------------------------------------------------------------------------------
def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def save_figure(fig: Any, path: Path) -> None:
    """Write a figure as PNG, with a clear error if the folder does not exist."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=100, format="png")
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise SeqappError(f"cannot write the plot to {path}: {exc.strerror}; check the folder exists") from None
    finally:
        plt.close(fig)
