"""The ``seqapp`` command line: parse, resolve the config or run, call the task, print.

Each command is a plain function whose ``Annotated`` parameters are its options. Task
names and templates come from the registry and the template folder, never from here.
TensorFlow is imported only by commands that need it, so ``--help`` answers at once.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from seqapp import __version__, backend, runs
from seqapp.errors import SeqappError

app = typer.Typer(
    help="Train and use recurrent neural networks (SimpleRNN, LSTM, GRU) on sequence data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RUNS_ROOT = Path("runs")
OutOption = Annotated[Path, typer.Option("--out", envvar="SEQAPP_RUNS", help="Folder that holds the runs.")]
RunOption = Annotated[Optional[Path], typer.Option("--run", help="A run folder; default: the latest suitable run.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def handle_errors(command: Callable) -> Callable:
    """Turn SeqappError into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SeqappError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; nothing was saved", err=True)
            raise typer.Exit(130) from None

    return wrapper


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"seqapp {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Train and use recurrent neural networks (SimpleRNN, LSTM, GRU) on sequence data."""


@app.command()
@handle_errors
def train(
    task: Annotated[str, typer.Argument(help="Task or template name (see 'seqapp tasks'), or a .yaml template path.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Data file to train on (default: the bundled data).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Maximum number of epochs (overrides train.epochs).")] = None,
    out: OutOption = RUNS_ROOT,
    name: Annotated[Optional[str], typer.Option("--name", help="Suffix for the run folder name.")] = None,
    random_seed: Annotated[Optional[int], typer.Option("--random-seed", help="Random seed (overrides train.random_seed).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting: --set model.units=512 (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress output.")] = False,
) -> None:
    """Train a model from a task template and save it as a run."""
    from seqapp import config

    values: dict[str, Any] = {}
    if data is not None:
        values.update({"data.path": str(data.resolve())})
    if epochs is not None:
        values["train.epochs"] = epochs
    if random_seed is not None:
        values["train.random_seed"] = random_seed
    cfg = config.load(task, overrides or [], values)
    if data is not None and hasattr(cfg.data, "text"):
        cfg.data.text = None  # a data file replaces a template's inline text
    if data is not None and not data.is_dir():  # a folder is the task's to accept or refuse
        from seqapp import datafiles

        datafiles.read_text(data)  # fail fast on a missing/empty/binary file, before TensorFlow starts

    backend.start()
    from seqapp.training import train as train_run

    run = train_run(cfg, out, name, verbose=0 if quiet else None)
    from seqapp.tasks import get_task

    typer.echo(f"saved run {run.path}")
    summary = get_task(cfg.task)().headline(run.metrics)
    if summary:
        typer.echo(summary)


@app.command()
@handle_errors
def generate(
    seed: Annotated[str, typer.Option("--seed", help="Seed text to continue (default: a line break).")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="Number of tokens to generate.")] = 300,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample only among the k most likely tokens.")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Sample from the smallest set with this much probability, in (0, 1].")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Independent samples, decoded as one batch.")] = 1,
    random_seed: Annotated[Optional[int], typer.Option("--random-seed", help="Random seed for reproducible sampling.")] = None,
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
) -> None:
    """Generate text that continues --seed with a text-generation run (streams to stdout)."""
    backend.start()
    from seqapp import sampling
    from seqapp.tasks import REGISTRY, get_task

    sampling.check_options(temperature, top_k, top_p)
    if length < 0 or num_samples < 1:
        raise SeqappError("--length must be >= 0 and --num-samples >= 1")
    generators = [name for name, cls in REGISTRY.items() if hasattr(cls, "generate")]
    run = runs.find(run_dir, out, generators)
    task = get_task(run.task)()
    warn = functools.partial(typer.echo, err=True)
    options = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p, random_seed=random_seed, warn=warn)
    texts = [""] * num_samples
    for pieces in task.generate(run, seed, num_samples=num_samples, **options):
        if num_samples == 1:
            sys.stdout.write(pieces[0])
            sys.stdout.flush()
        texts = [text + piece for text, piece in zip(texts, pieces)]
    if num_samples == 1:
        sys.stdout.write("\n")
        return
    for i, text in enumerate(texts, start=1):
        typer.echo(f"--- sample {i} ---")
        typer.echo(text)


@app.command()
@handle_errors
def evaluate(
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
    as_json: JsonOption = False,
) -> None:
    """Metrics of a run on its held-out data, beside a naive baseline."""
    backend.start()
    from seqapp.tasks import get_task

    run = runs.find(run_dir, out)
    task = get_task(run.task)()
    typer.echo(f"evaluating {run.path}", err=True)
    metrics = task.evaluate(run, task.load_data(run.config))
    if as_json:
        typer.echo(json.dumps({"run": str(run.path), "task": run.task, "metrics": metrics}, indent=2))
        return
    typer.echo(f"{run.task} run {run.path.name}")
    for line in task.format_metrics(metrics):
        typer.echo(line)


@app.command()
@handle_errors
def predict(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Inputs (texts, seeds); '-' reads one per line from stdin.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="Read inputs from this file, one per line.")] = None,
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
    as_json: JsonOption = False,
    horizon: Annotated[Optional[int], typer.Option("--horizon", help="Forecast this many steps (time-series runs).")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG plot of the prediction here.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the predictions to this file instead of stdout.")] = None,
    beam: Annotated[Optional[int], typer.Option("--beam", help="Beam width for sequence decoding (1 = greedy).")] = None,
    attention_plot: Annotated[Optional[Path], typer.Option("--attention-plot", help="Write an attention heat map PNG here.")] = None,
    random_seed: Annotated[Optional[int], typer.Option("--random-seed", help="Random seed, where prediction samples.")] = None,
) -> None:
    """Use the latest run (or --run) on new inputs and print the results."""
    backend.start()
    from seqapp.tasks import get_task

    texts = read_inputs(inputs or [], file)
    run = runs.find(run_dir, out)
    task = get_task(run.task)()
    given = {"horizon": horizon, "plot": plot, "beam": beam, "attention_plot": attention_plot,
             "random_seed": random_seed, "json": as_json or None, "output": output}
    given = {key: value for key, value in given.items() if value is not None}
    unsupported = sorted(set(given) - task.predict_options - {"output"})
    if unsupported:
        option = "--" + unsupported[0].replace("_", "-")
        raise SeqappError(f"{option} does not apply to a {run.task} run; see 'seqapp predict --help'")
    given.pop("output", None)
    lines = task.predict(run, texts, **given)
    if output is not None:
        output.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
        return
    for line in lines:
        typer.echo(line)


def read_inputs(inputs: list[str], file: Path | None) -> list[str]:
    """Inputs from arguments, with '-' meaning stdin, plus lines of --file."""
    texts: list[str] = []
    for item in inputs:
        if item == "-":
            texts.extend(line.rstrip("\n") for line in sys.stdin if line.strip())
        else:
            texts.append(item)
    if file is not None:
        from seqapp import datafiles

        texts.extend(line for line in datafiles.read_text(file).splitlines() if line.strip())
    return texts


@app.command("tasks")
@handle_errors
def list_tasks() -> None:
    """List the task templates, one line each (use the name with 'seqapp train')."""
    from seqapp import config
    from seqapp.tasks import REGISTRY

    found = config.templates()
    width = max((len(name) for name in found), default=10)
    for name, path in found.items():
        raw = config.read_yaml(path)
        typer.echo(f"{name.ljust(width)}  {str(raw.get('task', '?')).ljust(9)}  {raw.get('description', '')}")
    typer.echo("")
    typer.echo("tasks: " + "; ".join(f"{name}: {cls.summary}" for name, cls in REGISTRY.items()))


@app.command("runs")
@handle_errors
def list_runs(
    out: OutOption = RUNS_ROOT,
    task: Annotated[Optional[str], typer.Option("--task", help="Only runs of this task.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List past runs with their headline metrics, oldest first."""
    from seqapp.tasks import get_task

    if task is not None:
        get_task(task)
    rows = []
    for path in runs.run_dirs(out, task):
        run = runs.load(path)
        metrics = run.metrics
        rows.append({
            "task": run.task, "run": str(path), "date": path.name[:15],
            "cell": run.config.model.cell, "units": run.config.model.units,
            "epochs": metrics.get("epochs_trained"), "headline": get_task(run.task)().headline(metrics),
            "metrics": metrics,
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no runs in {out}; train one with 'seqapp train TASK'")
        return
    for row in rows:
        typer.echo(f"{row['task']:<10} {row['run']:<48} {row['cell']:>9}x{row['units']:<5} "
                   f"{row['epochs'] or '?':>3} ep  {row['headline']}")
