"""The sine / time-series regression task: data, splits, baselines, model and forecasts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqapp import config
from seqapp.errors import SeqappError
from seqapp.tasks import load_config
from seqapp.tasks.regression import Sine, SineDataConfig, forecast
from seqapp.tasks.series_data import (
    detect_period,
    error_figures,
    from_model,
    model_values,
    read_csv_series,
    seasonal_forecast,
    split_targets,
    split_windows,
    synthetic_series,
    window_starts,
)

TINY = Sine.tiny["set"]


def write_csv(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def seasonal_csv(tmp_path: Path, n: int = 240, period: int = 12) -> Path:
    """A monthly-looking series: trend + seasonal wave + a little noise, with a date column."""
    rng = np.random.default_rng(3)
    t = np.arange(n)
    values = 100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / period) + rng.normal(0, 1, n)
    rows = [f"{2000 + i // 12}-{i % 12 + 1:02d},7,{v:.3f}" for i, v in enumerate(values)]
    lines = ['"month","station","value"', *rows]
    return write_csv(tmp_path, "\n".join(lines) + "\n")


def tiny_config(*extra: str, template: str = "sine", values: dict | None = None) -> config.Config:
    return load_config(template, [*TINY, "train.epochs=1", *extra], values)


# -- synthetic data ---------------------------------------------------------------------------
def test_synthetic_series_shapes_and_statistics():
    data = SineDataConfig(count=30, length=400, frequency=[0.02, 0.05], amplitude=[0.5, 2.0], noise_sd=0.3)
    noisy, clean = synthetic_series(data, data.count, seed=1)
    assert len(noisy) == len(clean) == 30
    assert all(series.shape == (400,) for series in noisy)
    residual = np.concatenate([n - c for n, c in zip(noisy, clean)])
    assert residual.std() == pytest.approx(0.3, rel=0.05)
    assert abs(residual.mean()) < 0.02
    for wave in clean:
        spectrum = np.abs(np.fft.rfft(wave, 8192))
        peak = np.fft.rfftfreq(8192)[spectrum.argmax()]
        assert 0.019 <= peak <= 0.051
        assert 0.5 * 0.98 <= np.abs(wave).max() <= 2.0
    again, _ = synthetic_series(data, data.count, seed=1)
    other, _ = synthetic_series(data, data.count, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(noisy, again))
    assert not np.allclose(noisy[0], other[0])


def test_windows_pair_each_input_with_its_own_next_values():
    cfg = load_config("sine", ["data.count=2", "data.length=300", "data.window=20", "data.horizon=3"])
    task = Sine()
    splits = task.load_data(cfg)
    prep = task.fit_preprocessing(cfg, splits)
    x, y = split_windows(splits, splits.train, prep)
    assert x.shape[1:] == (20, 1) and y.shape[1:] == (3,)
    values = (splits.series[0] - prep["mean"]) / prep["std"]
    first = 20  # the first target position with a full window before it
    np.testing.assert_allclose(x[0, :, 0], values[:first], rtol=1e-5)
    np.testing.assert_allclose(y[0], values[first:first + 3], rtol=1e-5)


def test_differencing_reads_steps_and_adds_them_back(tmp_path):
    cfg = load_config("sine", ["data.window=10", "data.difference=true"], {"data.path": str(seasonal_csv(tmp_path))})
    task = Sine()
    splits = task.load_data(cfg)
    prep = task.fit_preprocessing(cfg, splits)
    begin, end = splits.train[0]
    steps = np.diff(splits.series[0][begin:end])
    assert prep["mean"] == pytest.approx(steps.mean()) and prep["std"] == pytest.approx(steps.std())
    x, y = split_windows(splits, splits.train, prep)
    np.testing.assert_allclose(x[0, :, 0] * prep["std"] + prep["mean"], steps[:10], rtol=1e-4)
    np.testing.assert_allclose(y[0] * prep["std"] + prep["mean"], steps[10:11], rtol=1e-4)
    outputs = model_values(np.array([5.0, 6.0, 8.0, 11.0]), prep)[1:][None, :]
    np.testing.assert_allclose(from_model(outputs, prep, np.array([5.0])), [[6.0, 8.0, 11.0]], rtol=1e-5)


# -- chronological splits, no leakage ---------------------------------------------------------
def test_splits_are_chronological_and_nothing_leaks(tmp_path):
    path = seasonal_csv(tmp_path, n=200)
    cfg = load_config("sine", ["data.window=10", "data.horizon=2"], {"data.path": str(path)})
    task = Sine()
    splits = task.load_data(cfg)
    (train,), (val,), (test,) = splits.train, splits.val, splits.test
    assert train[0] == 0 and train[1] == val[0] and val[1] == test[0] and test[1] == 200
    # poison everything after the training part: the statistics and training windows must not change
    clean_prep = task.fit_preprocessing(cfg, splits)
    clean_x, clean_y = split_windows(splits, splits.train, clean_prep)
    splits.series[0][train[1]:] = 1e6
    prep = task.fit_preprocessing(cfg, splits)
    assert prep["mean"] == clean_prep["mean"] and prep["std"] == clean_prep["std"]
    x, y = split_windows(splits, splits.train, prep)
    np.testing.assert_array_equal(x, clean_x)
    np.testing.assert_array_equal(y, clean_y)
    # held-out targets lie in their own split; their windows only look back
    for begin, end in (val, test):
        starts = window_starts(begin, end, 10, 2)
        assert starts.min() >= begin and starts.max() + 2 <= end


def test_normalisation_uses_train_statistics(tmp_path):
    path = seasonal_csv(tmp_path, n=200)
    cfg = load_config("sine", ["data.window=10"], {"data.path": str(path)})
    task = Sine()
    splits = task.load_data(cfg)
    prep = task.fit_preprocessing(cfg, splits)
    begin, end = splits.train[0]
    assert prep["mean"] == pytest.approx(splits.series[0][begin:end].mean())
    assert prep["std"] == pytest.approx(splits.series[0][begin:end].std())
    assert prep["mean"] < splits.series[0].mean()  # the trend makes the later splits higher


# -- CSV input -------------------------------------------------------------------------------
def test_csv_default_column_is_the_last_numeric_one_and_dates_are_kept(tmp_path):
    values, dates, name = read_csv_series(seasonal_csv(tmp_path, n=30), None, None)
    assert name == "value" and values.shape == (30,)
    assert dates[:2] == ["2000-01", "2000-02"]
    values, _, name = read_csv_series(seasonal_csv(tmp_path, n=30), "station", None)
    assert name == "station" and set(values) == {7.0}


def test_csv_semicolons_and_blank_trailing_lines(tmp_path):
    path = write_csv(tmp_path, "day;temp\n1;3,5\n2;4.5\n\n".replace("3,5", "3.5"))
    values, dates, name = read_csv_series(path, None, None)
    assert name == "temp" and values.tolist() == [3.5, 4.5] and dates is None


@pytest.mark.parametrize(
    "text, column, words",
    [
        ("Date,Temp\n2000-01-01,3\n", "temp", ["no column 'temp'", "did you mean 'Temp'", "Date, Temp"]),
        ("Date,Temp\n2000-01-01,3\n2000-01-02,warm\n", "Temp", ["line 3", "'warm'", "'Temp'", "not a number"]),
        ("Date,Temp\n2000-01-01,3\n2000-01-02,4\n2000-01-03,warm\n", None, ["line 4", "'warm'", "'Temp'"]),
        ("Date,Temp\n2000-01-01,3\n2000-01-02,\n2000-01-03,4\n", "Temp", ["line 3", "missing value", "'Temp'"]),
        ("Date,Temp\n2000-01-01,3\n2000-01-02,inf\n", "Temp", ["line 3", "finite"]),
        ("Date,Temp\n", None, ["no data rows"]),
        ("Date,Place\n2000-01-01,here\n", None, ["no numeric column", "data.column"]),
        ("", None, ["empty"]),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, text, column, words):
    path = write_csv(tmp_path, text)
    with pytest.raises(SeqappError) as info:
        read_csv_series(path, column, None)
    for word in words:
        assert word in str(info.value)


def test_missing_file_and_too_few_rows_for_one_window(tmp_path):
    with pytest.raises(SeqappError, match="does not exist"):
        read_csv_series(tmp_path / "nope.csv", None, None)
    path = seasonal_csv(tmp_path, n=40)
    cfg = load_config("sine", ["data.window=50"], {"data.path": str(path)})
    with pytest.raises(SeqappError) as info:
        Sine().load_data(cfg)
    assert "40 values" in str(info.value) and "data.window=50" in str(info.value)


@pytest.mark.parametrize(
    "override, words",
    [
        (["data.target=sequence", "data.horizon=3"], ["data.horizon=1"]),
        (["data.frequency=[0.05, 0.02]"], ["data.frequency", "low <= high"]),
        (["data.frequency=[0.2, 0.7]"], ["data.frequency", "< 0.5"]),
        (["data.target=sequence", "model.bidirectional=true"], ["bidirectional", "future"]),
        (["data.target=both"], ["next, sequence"]),
    ],
)
def test_bad_settings_are_refused(override, words):
    with pytest.raises(SeqappError) as info:
        load_config("sine", override)
    for word in words:
        assert word in str(info.value)


# -- baselines -------------------------------------------------------------------------------
def test_detect_period():
    t = np.arange(600)
    rng = np.random.default_rng(0)
    assert detect_period(np.sin(2 * np.pi * t / 25) + rng.normal(0, 0.1, 600)) == 25
    assert detect_period(0.3 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, 600)) == 12
    assert detect_period(rng.normal(0, 1, 600)) is None


def test_seasonal_forecast_looks_whole_periods_back():
    values = np.arange(20.0)
    np.testing.assert_array_equal(seasonal_forecast(values, np.array([10]), 5, 3), [[7, 8, 9, 7, 8]])
    assert seasonal_forecast(values, np.array([10]), 2, None) is None


def test_error_figures():
    figures = error_figures(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 6.0]))
    assert figures == {"mse": pytest.approx(13 / 3, abs=1e-6), "mae": pytest.approx(5 / 3, abs=1e-6),
                       "rmse": pytest.approx((13 / 3) ** 0.5, abs=1e-6)}


def test_last_value_baseline_targets(tmp_path):
    cfg = load_config("sine", ["data.window=10", "data.period=12"], {"data.path": str(seasonal_csv(tmp_path))})
    task = Sine()
    splits = task.load_data(cfg)
    prep = task.fit_preprocessing(cfg, splits)
    targets = split_targets(splits, splits.test, prep)
    begin, end = splits.test[0]
    values = splits.series[0]
    np.testing.assert_array_equal(targets.y[:, 0], values[begin:end])
    np.testing.assert_array_equal(targets.last_value[:, 0], values[begin - 1:end - 1])
    np.testing.assert_array_equal(targets.seasonal[:, 0], values[begin - 12:end - 12])


# -- trained runs: forecasts, metrics, templates ------------------------------------------------
@pytest.fixture
def tiny_run(tiny_runs):
    """The session's tiny sine run (``tiny_config()``)."""
    return tiny_runs("sine")


def test_metrics_have_baselines_and_the_noise_floor(tiny_run):
    metrics = tiny_run.metrics
    for key in ("test", "val", "baseline_last_value", "baseline_seasonal", "noise_floor", "noise_realised"):
        assert key in metrics
    assert metrics["noise_floor"]["mse"] == pytest.approx(0.01)
    assert metrics["noise_realised"]["test"]["mse"] == pytest.approx(0.01, rel=0.5)
    assert metrics["test_mse_over_noise_floor"] == pytest.approx(metrics["test"]["mse"] / 0.01, rel=1e-3)
    lines = Sine().format_metrics(metrics)
    assert any(line.strip().startswith("last value") for line in lines)
    assert "test MSE" in Sine().headline(metrics)


def test_forecast_carries_state_like_rereading_the_whole_sequence(tiny_run):
    """The single-step model shares the weights: each forecast equals the full model on history + forecasts."""
    task = Sine()
    splits = task.load_data(tiny_run.config)
    history = splits.series[0][:60]
    values = forecast(tiny_run, history, 6)
    prep = tiny_run.preprocessing
    sequence = (np.concatenate([history[-prep["window"]:], values]) - prep["mean"]) / prep["std"]
    for k in range(6):
        seen = sequence[:prep["window"] + k].astype(np.float32)
        expected = tiny_run.model.predict(seen[None, :, None], verbose=0)[0, 0] * prep["std"] + prep["mean"]
        assert values[k] == pytest.approx(expected, abs=1e-4)


def test_predict_length_reproducibility_and_outputs(tiny_run, cli, tmp_path):
    args = ["predict", "--run", tiny_run.path]
    first = cli(*args, "--horizon", "7")
    assert first.exit_code == 0, first.output
    lines = first.stdout.strip().splitlines()
    assert lines[0] == "step,value" and len(lines) == 8
    assert [line.split(",")[0] for line in lines[1:]] == [str(i) for i in range(1, 8)]
    assert cli(*args, "--horizon", "7").stdout == first.stdout
    assert cli(*args, "--horizon", "3").stdout.splitlines() == lines[:4]
    shown = json.loads(cli(*args, "--horizon", "7", "--json").stdout)
    assert shown["forecast"] == pytest.approx([float(line.split(",")[1]) for line in lines[1:]], rel=1e-4)
    png, table = tmp_path / "f.png", tmp_path / "f.csv"
    assert cli(*args, "--horizon", "7", "--plot", png, "-o", table).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert table.read_text().splitlines() == lines
    fresh = cli(*args, "--horizon", "7", "--random-seed", "5")
    assert fresh.exit_code == 0 and fresh.stdout != first.stdout
    assert cli(*args, "--horizon", "7", "--random-seed", "5").stdout == fresh.stdout


def test_predict_refuses_inputs_and_bad_horizon(tiny_run, cli):
    result = cli("predict", "--run", tiny_run.path, "hello")
    assert result.exit_code == 2 and "takes no inputs" in result.output
    result = cli("predict", "--run", tiny_run.path, "--horizon", "0")
    assert result.exit_code == 2 and "--horizon 0" in result.output
    result = cli("predict", "--run", tiny_run.path, "--beam", "3")
    assert result.exit_code == 2 and "--beam" in result.output


def test_csv_run_end_to_end_with_multi_step_targets(cli, tmp_path):
    path = seasonal_csv(tmp_path)
    out = tmp_path / "runs"
    result = cli("train", "sine", "--data", path, "--epochs", "1", "--out", out, "-q",
                 "--set", "data.window=12", "--set", "data.horizon=3", "--set", "model.units=8",
                 "--set", "data.difference=true")
    assert result.exit_code == 0, result.output
    assert "test MSE" in result.stdout
    evaluated = cli("evaluate", "--out", out, "--json")
    metrics = json.loads(evaluated.stdout)["metrics"]
    assert metrics["seasonal_period"] == 12 and metrics["horizon"] == 3
    assert "noise_floor" not in metrics and "baseline_seasonal" in metrics
    predicted = cli("predict", "--out", out, "--horizon", "8", "--plot", tmp_path / "p.png")
    assert len(predicted.stdout.strip().splitlines()) == 9
    refused = cli("predict", "--out", out, "--random-seed", "1")
    assert refused.exit_code == 2 and "synthetic" in refused.output
    run_dir = next((out / "sine").glob("[0-9]*"))
    assert (run_dir / "plots" / "test_forecast.png").exists()


@pytest.mark.parametrize("template, layer_class, units, dropout", [("sine-simplernn", "SimpleRNN", 64, None),
                                                                    ("series-lstm", "LSTM", 50, 0.2)])
def test_classic_templates(template, layer_class, units, dropout, tmp_path):
    from seqapp.training import train

    cfg = load_config(template)
    prep = {"horizon": 1, "target": cfg.data.target}
    model = Sine().build_model(cfg, prep)
    recurrent = [layer for layer in model.layers if type(layer).__name__ == layer_class]
    assert len(recurrent) == 1 and recurrent[0].units == units
    assert model.layers[-1].units == 1 and Sine().objective(cfg, prep).loss == "mse"
    if template == "sine-simplernn":
        assert recurrent[0].return_sequences and recurrent[0].activation.__name__ == "tanh"
    rates = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert rates == ([dropout] if dropout else [])
    run = train(load_config(template, ["data.count=3", "data.length=150", "data.window=12", "train.epochs=1"]),
                tmp_path, verbose=0, log=lambda message: None)
    assert run.metrics["test"]["mse"] > 0
    assert len(list(Sine().predict(run, [], horizon=4))) == 5


# -- acceptance on the default template and real data (slow) -----------------------------------
@pytest.mark.slow
def test_default_template_reaches_the_noise_floor(tmp_path):
    from seqapp.training import train

    run = train(load_config("sine"), tmp_path, verbose=0, log=lambda message: None)
    assert run.metrics["test"]["mse"] <= 1.1 * run.metrics["noise_floor"]["mse"]


@pytest.mark.slow
def test_daily_temperatures_beat_both_naive_baselines(shared_data, tmp_path):
    from seqapp.training import train

    path = shared_data / "timeseries" / "daily-min-temperatures.csv"
    run = train(load_config("series-lstm", ["data.column=Temp"], {"data.path": str(path)}), tmp_path,
                verbose=0, log=lambda message: None)
    metrics = run.metrics
    assert metrics["seasonal_period"] in range(355, 376)
    assert metrics["test"]["mae"] < metrics["baseline_last_value"]["test"]["mae"]
    assert metrics["test"]["mae"] < metrics["baseline_seasonal"]["test"]["mae"]


@pytest.mark.slow
def test_air_passengers_trains_and_reports(shared_data, tmp_path):
    from seqapp.training import train

    path = shared_data / "timeseries" / "AirPassengers.csv"
    for difference in ("false", "true"):
        cfg = load_config("series-lstm", ["data.window=12", f"data.difference={difference}"], {"data.path": str(path)})
        metrics = train(cfg, tmp_path, verbose=0, log=lambda message: None).metrics
        assert metrics["seasonal_period"] == 12 and metrics["points"]["test"] == 22
        assert {"test", "baseline_last_value", "baseline_seasonal"} <= set(metrics)
        assert np.isfinite(metrics["test"]["mse"])
    # modelling the monthly changes copes with the trend: better than both naive forecasts
    assert metrics["test"]["mae"] < min(metrics["baseline_last_value"]["test"]["mae"],
                                        metrics["baseline_seasonal"]["test"]["mae"])
