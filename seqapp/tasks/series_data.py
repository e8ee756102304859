"""Time series for the sine task: where the values come from and how they are cut up.

Plain NumPy, no TensorFlow: the data settings (:class:`SineDataConfig`, the task's
``data`` section); synthetic noisy sine waves or one numeric column of a CSV
file; chronological train / val / test ranges; input windows and their targets; the
normalised values the model reads and predicts; the naive forecasts (last value,
seasonal) that every model is judged against, and the error figures of a forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqapp import datafiles
from seqapp.config import setting
from seqapp.errors import SeqappError
from seqapp.tasks.base import Splits


@dataclass
class SineDataConfig:
    """Where the series comes from (synthetic sines or a CSV file) and how it is windowed."""

    path: str | None = setting(None, "CSV file with a header row and one row per time step; null: synthetic sine waves")
    column: str | None = setting(None, "the CSV column to forecast; null: the last numeric column")
    date_column: str | None = setting(None, "the CSV column of time labels, for plots; "
                                            "null: the first non-numeric column, if any")
    window: int = setting(50, "past values the model reads for one forecast", min=1)
    horizon: int = setting(1, "values forecast from each window (target: next)", min=1)
    target: str = setting("next", "next: the horizon values after the window; sequence: at every position "
                                  "of the window, the value after it", choices=("next", "sequence"))
    stride: int = setting(1, "steps between the starts of consecutive training windows", min=1)
    difference: bool = setting(False, "model the change from one step to the next (for a series with a trend)")
    period: int | None = setting(None, "seasonal period in steps, for the seasonal baseline; "
                                       "null: detected by autocorrelation", min=2)
    val_fraction: float = setting(0.15, "share of each series, after the training part, used for validation",
                                  min=0.0, max=0.5, high_open=True)
    test_fraction: float = setting(0.15, "share at the end of each series held out for testing",
                                   min=0.0, max=0.5, low_open=True, high_open=True)
    count: int = setting(40, "synthetic data: number of series", min=1)
    length: int = setting(1000, "synthetic data: values per series", min=2)
    frequency: list[float] = setting(help="synthetic data: [low, high] range of each wave's frequency, "
                                          "in cycles per step (below 0.5)",
                                     factory=lambda: [0.02, 0.05], min=0.0, max=0.5, low_open=True, high_open=True)
    amplitude: list[float] = setting(help="synthetic data: [low, high] range of each wave's amplitude",
                                     factory=lambda: [1.0, 1.0], min=0.0)
    phase: float | None = setting(None, "synthetic data: phase of every wave, in radians; "
                                        "null: a random phase per series")
    noise_sd: float = setting(0.1, "synthetic data: standard deviation of the Gaussian noise added to each value",
                              min=0.0)
    random_seed: int = setting(0, "synthetic data: seed that draws the waves and their noise", min=0)


MISSING = {"", "na", "nan", "n/a", "null", "none", "?", "-"}  # cells read as a missing value


@dataclass
class SeriesSplits(Splits):
    """``train`` / ``val`` / ``test`` hold one ``(begin, end)`` index range per series."""

    series: list[np.ndarray] = field(default_factory=list)
    clean: list[np.ndarray] | None = None  # the noise-free waves (synthetic data only)
    dates: list[str] | None = None  # one label per point of series 0 (CSV data only)
    name: str = ""  # what the values are: the CSV column, or "sine"
    periods: list[int | None] | None = None  # seasonal periods of new data (evaluate --data); None: the run's


# -- synthetic data -----------------------------------------------------------------------
def synthetic_series(data: SineDataConfig, count: int, seed: int,
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
    return series_from_rows(datafiles.read_rows(path, "csv", sniff=True), path, column, date_column)


def read_history(source: str | Path, column: str | None,
                 date_column: str | None) -> tuple[np.ndarray, list[str] | None]:
    """A new history to forecast from (``seqapp predict --data``) and its date labels: a CSV file
    read with the run's column rules (:func:`read_csv_series`), or plain numbers one per line;
    ``-`` reads either from stdin."""
    if str(source) == "-":
        import sys

        text, where = sys.stdin.read(), "stdin"
        if not text.strip():
            raise SeqappError("--data -: stdin is empty; pipe the history in, one number per line or as CSV")
    else:
        text, where = datafiles.read_text(source), str(source)
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not is_number(lines[0][1]):
        rows = datafiles.csv_rows(text, datafiles.sniff_dialect(text), Path(where))
        values, dates, _ = series_from_rows(rows, where, column, date_column)
        return values, dates
    for number, line in lines:
        if not is_number(line):
            raise SeqappError(f"{where} line {number}: {line[:40]!r} is not a finite number; give one number per "
                              "line, or a CSV file with a header row")
    return np.array([float(line) for _, line in lines]), None


def series_from_rows(rows: list[tuple[int, list[str]]], path: Any, column: str | None,
                     date_column: str | None) -> tuple[np.ndarray, list[str] | None, str]:
    """:func:`read_csv_series` of rows already read (``path`` names them in errors)."""
    if len(rows) < 2:
        raise SeqappError(f"{path} has a header but no data rows; add one row per time step")
    header = [name.strip() for name in rows[0][1]]
    body = rows[1:]
    value_index = find_value_column(path, header, body, column)
    date_index = find_date_column(path, header, body, date_column, value_index)
    name = header[value_index]
    values = np.array([parse_value(path, line, row, value_index, name) for line, row in body])
    dates = None
    if date_index is not None:
        dates = [row[date_index].strip() if date_index < len(row) else "" for _, row in body]
    return values, dates, name


def is_number(cell: str) -> bool:
    """Whether a cell holds a finite number."""
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


# -- chronological splits and windows -----------------------------------------------------
def split_ranges(n: int, data: SineDataConfig, source: str) -> list[tuple[int, int]]:
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


# -- what the model reads ----------------------------------------------------------------
def normalise(values: np.ndarray, prep: dict) -> np.ndarray:
    """Values scaled by the training statistics in ``prep`` (mean 0, standard deviation 1)."""
    return ((values - prep["mean"]) / prep["std"]).astype(np.float32)


def denormalise(values: np.ndarray, prep: dict) -> np.ndarray:
    """Normalised values back in original units."""
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


# -- training arrays and evaluation targets ---------------------------------------------
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


def target_places(splits: SeriesSplits, ranges: list, prep: dict) -> list[tuple[int, int]]:
    """``(series, position of the first target)`` of each window :func:`split_targets` makes, in its order."""
    lead = prep["window"] + prep.get("difference", False)
    return [(i, int(start)) for i, (begin, end) in enumerate(ranges)
            for start in window_starts(begin, end, lead, prep["horizon"])]


# -- naive baselines and errors ----------------------------------------------------------
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
