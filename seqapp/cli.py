"""The ``seqapp`` command line: parse, resolve the config or run, call the task, print.

Each command is a plain function whose ``Annotated`` parameters are its options. Task
names and templates come from the registry and the template folder, never from here.
TensorFlow is imported only by commands that need it, so ``--help`` answers at once.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from seqapp import __version__, backend, drafts, exporting, files, launch, listing, runs, serve
from seqapp.engines import start_engine
from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY, find_run, get_task

app = typer.Typer(
    help="Train and use recurrent neural networks (SimpleRNN, LSTM, GRU) on sequence data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RUNS_ROOT = Path("runs")
OutOption = Annotated[Path, typer.Option("--out", envvar="SEQAPP_RUNS", help="Folder that holds the runs.")]
RunOption = Annotated[Path | None, typer.Option("--run", help="A run folder; default: the latest suitable run.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TemplateArgument = Annotated[str, typer.Argument(
    help="Task or template name (see 'seqapp tasks'), or a .yaml template path.")]
EngineOption = Annotated[str, typer.Option(
    "--engine", help="auto: the run's LiteRT graphs when it has them (fast, no TensorFlow), else tf; "
                     "litert; or tf (Keras).")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a setting: --set model.units=512 (repeatable).")]


class StderrHandler(logging.Handler):
    """Show the ``seqapp`` logger's records on the current ``sys.stderr``: ``warning: ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        sys.stderr.write(f"{prefix}{record.getMessage()}\n")
        sys.stderr.flush()


def show_task_messages() -> None:
    """Route what tasks report (``logging.getLogger('seqapp')``) to stderr, once."""
    logger = logging.getLogger("seqapp")
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        logger.addHandler(StderrHandler())
    logger.setLevel(logging.INFO)


def handle_errors(command: Callable) -> Callable:
    """Turn SeqappError into one line on stderr and exit code 2; Ctrl-C into exit 130.

    An interrupted training says how to resume it and exits 128 + the signal's number
    (130 for Ctrl-C, 143 for SIGTERM). ``SEQAPP_DEBUG=1`` adds the traceback, for bug reports.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        show_task_messages()
        try:
            return command(*args, **kwargs)
        except SeqappError as exc:
            show_traceback()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if not isinstance(exc, MemoryError) and type(exc).__name__ != "ResourceExhaustedError":
                raise
            show_traceback()
            typer.echo("error: out of memory; use a smaller model (model.units, model.layers) or a smaller "
                       "train.batch_size", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            draft, run = getattr(exc, "draft", None), getattr(exc, "run", None)
            if run is not None:
                typer.echo(f"interrupted after the run was saved: {run}", err=True)
            elif draft is not None:
                typer.echo(f"interrupted; the training state is saved. resume with: {drafts.resume_command(draft)}",
                           err=True)
            else:
                typer.echo("interrupted; nothing was saved", err=True)
            raise typer.Exit(128 + getattr(exc, "signum", 2)) from None

    return wrapper


def show_traceback() -> None:
    """With ``SEQAPP_DEBUG=1``, print the traceback of the exception being handled."""
    import os

    if os.environ.get("SEQAPP_DEBUG", "") not in ("", "0"):
        import traceback

        traceback.print_exc()


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
    task: Annotated[str | None, typer.Argument(
        metavar="TASK|DRAFT", show_default=False,
        help="Task or template name (see 'seqapp tasks'), or a .yaml template path; with --resume, "
             "the draft folder to continue (default: the newest).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Data file to train on (default: the bundled data).")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help="Maximum number of epochs (overrides train.epochs).")] = None,
    out: OutOption = RUNS_ROOT,
    name: Annotated[str | None, typer.Option("--name", help="Suffix for the run folder name.")] = None,
    random_seed: Annotated[int | None, typer.Option(
        "--random-seed", help="Random seed (overrides train.random_seed).")] = None,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted training (see 'seqapp runs --drafts') with its saved "
                         "settings: the draft named, or the newest under --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress output.")] = False,
) -> None:
    """Train a model from a task template and save it as a run (Ctrl-C saves the state to resume)."""
    if resume:
        run = resume_training(task, out, quiet, data=data, epochs=epochs, name=name,
                              random_seed=random_seed, overrides=overrides)
    else:
        run = new_training(task, data, epochs, out, name, random_seed, overrides or [], quiet)
    typer.echo(f"saved run {run.path}")
    summary = get_task(run.task)().headline(run.metrics)
    if summary:
        typer.echo(summary)


def new_training(task: str | None, data: Path | None, epochs: int | None, out: Path, name: str | None,
                 random_seed: int | None, overrides: list[str], quiet: bool) -> runs.Run:
    """``seqapp train TASK``: resolve the template, check the data, train and save a run."""
    from seqapp.tasks import load_config

    if task is None:
        raise SeqappError("no task given; name a task or template to train (see 'seqapp tasks'), or continue an "
                          "interrupted training with --resume")
    files.check_name(name)
    values: dict[str, Any] = {}
    if epochs is not None:
        values["train.epochs"] = epochs
    if random_seed is not None:
        values["train.random_seed"] = random_seed
    cfg = load_config(task, overrides, values, data_file=data)
    if data is not None and not data.is_dir():  # a folder is the task's to accept or refuse
        from seqapp import datafiles

        datafiles.read_text(data)  # fail fast on a missing/empty/binary file, before TensorFlow starts
    get_task(cfg.task).check_sources(cfg)  # e.g. pretrained vectors: their first lines, before TensorFlow starts
    drafts.task_folder(out, cfg.task)  # an unwritable --out, before TensorFlow starts
    backend.start()
    from seqapp.training import train as train_run

    return train_run(cfg, out, name, verbose=0 if quiet else None)


def resume_training(draft: str | None, out: Path, quiet: bool, **settings: Any) -> runs.Run:
    """``seqapp train --resume [DRAFT]``: continue an interrupted training with its saved settings."""
    given = [key for key, value in settings.items() if value not in (None, [])]
    if given:
        option = "--set" if given[0] == "overrides" else "--" + given[0].replace("_", "-")
        raise SeqappError(f"--resume continues a training with its saved settings; drop {option}, "
                          "or start a new training without --resume")
    path = Path(draft) if draft else drafts.newest(out)
    if launch.worker_index() > 0:  # a multi-worker training: each worker goes on from its own backup of that launch
        path = drafts.worker_backup(out, launch.worker_index(), Path(draft) if draft else None)
    drafts.open_draft(path).unlock()  # a clear error now if it cannot be resumed, before TensorFlow starts
    backend.start()
    from seqapp.training import resume as resume_run

    return resume_run(path, out, verbose=0 if quiet else None)


@app.command()
@handle_errors
def generate(
    seed: Annotated[str, typer.Option("--seed", help="Seed text to continue (default: a line break).")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="Number of tokens to generate.")] = 300,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Sample only among the k most likely tokens.")] = None,
    top_p: Annotated[float | None, typer.Option(
        "--top-p", help="Sample from the smallest set with this much probability, in (0, 1].")] = None,
    num_samples: Annotated[int, typer.Option(
        "--num-samples", help="Independent samples, decoded as one batch.")] = 1,
    random_seed: Annotated[int | None, typer.Option(
        "--random-seed", help="Random seed for reproducible sampling.")] = None,
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
    engine: EngineOption = "auto",
    stop: Annotated[list[str] | None, typer.Option(
        "--stop", help="End a sample right after the first place its generated text (the seed excluded) holds "
                       "this text (repeatable: the first found ends it).")] = None,
    no_repeat_ngram: Annotated[int | None, typer.Option(
        "--no-repeat-ngram", help="Never generate an n-gram of N tokens twice (the seed excluded); a sample "
                                  "with no token left ends.")] = None,
) -> None:
    """Generate text that continues --seed with a text-generation run (streams to stdout)."""
    from seqapp import sampling

    sampling.check_options(temperature, top_k, top_p)
    sampling.check_counts(length, num_samples)
    sampling.check_stops(stop)
    sampling.check_no_repeat_ngram(no_repeat_ngram)
    run = find_run(run_dir, out, [name for name, cls in REGISTRY.items() if cls.generates])
    task = get_task(run.task)()
    options = {"length": length, "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "random_seed": random_seed, "engine": start_engine(task, run, engine)}
    options |= {key: value for key, value in (("stop", stop), ("no_repeat_ngram", no_repeat_ngram)) if value}
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
    run = find_run(run_dir, out)
    backend.start()
    task = get_task(run.task)()
    run.model  # noqa: B018 (a damaged model file is one error line, before any progress line)
    typer.echo(f"evaluating {run.path}", err=True)
    metrics = task.evaluate(run, task.load_data(run.config))
    if as_json:
        typer.echo(json.dumps(files.finite({"run": str(run.path), "task": run.task, "metrics": metrics}), indent=2))
        return
    typer.echo(f"{run.task} run {run.path.name}")
    for line in task.format_metrics(metrics):
        typer.echo(line)


def predict(
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Inputs (texts, seeds); '-' reads one per line from stdin.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read inputs from this file, one per line.")] = None,
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the predictions to this file instead of stdout.")] = None,
    engine: EngineOption = "auto",
    **task_options: Any,
) -> None:
    """Use the latest run (or --run) on new inputs and print the results."""
    texts = read_inputs(inputs or [], file)
    run = find_run(run_dir, out)
    task = get_task(run.task)()
    given = {key: value for key, value in task_options.items() if value is not None and value is not False}
    supported = {option.name for option in task.predict_options}
    unsupported = sorted(set(given) - supported)
    if unsupported:
        option = "--" + unsupported[0].replace("_", "-")
        raise SeqappError(f"{option} does not apply to a {run.task} run; see 'seqapp predict --help'")
    task.check_inputs(texts, **given)
    task.check_run_options(run, **given)
    if output is not None and not output.parent.is_dir():
        raise SeqappError(f"--output {output}: folder {output.parent} does not exist; create it first")
    if start_engine(task, run, engine) == "litert":
        given["engine"] = "litert"
    lines = task.predict(run, texts, **given)
    if output is not None:
        text = "".join(f"{line}\n" for line in lines)
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise SeqappError(f"cannot write --output {output} ({exc.strerror or exc}); choose another path") from None
        typer.echo(f"wrote {output}", err=True)
        return
    for line in lines:
        typer.echo(line)


def export(
    to: Annotated[Path, typer.Option(
        "--to", show_default=False,
        help="Folder to export into, e.g. a TensorFlow Serving model base path: the model is written to "
             "TO/NAME/VERSION/ with a README.md in TO/NAME/. (Not --out: --out is the folder of runs, "
             "as in every command.)")],
    run_dir: Annotated[Path | None, typer.Option("--run", help="A run folder; default: the latest run.")] = None,
    out: OutOption = RUNS_ROOT,
    fmt: Annotated[str, typer.Option(
        "--format", help="saved_model: TensorFlow SavedModel taking raw inputs (preprocessing in the graph); "
                         "litert: a .tflite taking token ids or normalised values, with its vocabulary "
                         "JSON beside it.")] = "saved_model",
    name: Annotated[str | None, typer.Option(
        "--name", help="Model name, the folder under TO (default: the run's task).")] = None,
    version: Annotated[int, typer.Option(
        "--version", help="Version folder under TO/NAME; an existing one is never overwritten.")] = 1,
) -> None:
    """Export a run as a model with its preprocessing inside (TensorFlow Serving layout)."""
    exporting.check_options(fmt, name, version)
    run = find_run(run_dir, out)
    serving = exporting.check_serving(get_task(run.task)().serving_module(run), run.task, fmt)
    target = Path(to) / (name or run.task) / str(version)
    exporting.check_target(to, target, version, fmt)
    backend.start()
    run.model  # noqa: B018 (a damaged model file is one error line, before anything is written)
    exporting.export(serving, fmt, target)
    typer.echo(f"exported {run.path} ({run.task}, {fmt}) to {target}")
    typer.echo(f"see {target.parent / 'README.md'}")


def task_option_parameters() -> list[inspect.Parameter]:
    """``seqapp predict`` options declared by the tasks (one per name), as keyword parameters.

    An option several tasks declare is listed once, its help naming the tasks; so the
    CLI learns a new task's options from the task itself.
    """
    declared: dict[str, tuple[Any, list[str]]] = {}
    for task_name, cls in REGISTRY.items():
        for option in cls.predict_options:
            first, users = declared.setdefault(option.name, (option, []))
            if first.type is not option.type:
                raise TypeError(f"predict option {option.name!r}: {task_name} and {users[0]} disagree on its type")
            users.append(task_name)
    parameters = []
    for name, (option, users) in declared.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{option.help.rstrip('.')} ({', '.join(users)} runs)."
        if option.type is bool:
            annotation = Annotated[bool, typer.Option(flag, help=help_text)]
            default: Any = False
        else:
            annotation = Annotated[option.type | None, typer.Option(flag, help=help_text)]
            default = None
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
    return parameters


def with_task_options(command: Callable) -> Callable:
    """``command`` with its ``**task_options`` replaced by the tasks' declared options."""
    signature = inspect.signature(command, eval_str=True)
    fixed = [param for param in signature.parameters.values() if param.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=fixed + task_option_parameters())
    return command


app.command("predict")(with_task_options(handle_errors(predict)))
app.command("export")(handle_errors(export))
app.command("serve")(handle_errors(serve.command))
app.command("launch")(handle_errors(launch.launch))


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

        texts.extend(line for line in datafiles.read_text(file, option="--file").splitlines() if line.strip())
    return texts


@app.command("tasks")
@handle_errors
def list_tasks() -> None:
    """List the task templates, one line each (use the name with 'seqapp train')."""
    from seqapp import config

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
    targets: Annotated[list[Path] | None, typer.Argument(
        metavar="[DRAFT]...", show_default=False,
        help="With --clean-drafts: the draft folders to delete (see 'seqapp runs --drafts').")] = None,
    out: OutOption = RUNS_ROOT,
    task: Annotated[str | None, typer.Option("--task", help="Only runs of this task.")] = None,
    as_json: JsonOption = False,
    show_drafts: Annotated[bool, typer.Option(
        "--drafts", help="List interrupted (and running) trainings instead, with how far they got; "
                         "damaged ones are marked.")] = False,
    clean_drafts: Annotated[bool, typer.Option(
        "--clean-drafts", help="Delete the drafts named (DRAFT...), and with --damaged those under --out that "
                               "cannot be resumed; never one a training is running in.")] = False,
    damaged: Annotated[bool, typer.Option(
        "--damaged", help="With --clean-drafts: every draft under --out (of --task) that cannot be read.")] = False,
) -> None:
    """List past runs with their headline metrics, oldest first."""
    if task is not None:
        get_task(task)
    if clean_drafts:
        return remove_drafts(out, task, targets or [], damaged)
    if targets or damaged:
        what = "a DRAFT folder" if targets else "--damaged"
        raise SeqappError(f"{what} goes with --clean-drafts (seqapp runs --clean-drafts DRAFT..., or "
                          "--clean-drafts --damaged); to list the drafts: seqapp runs --drafts")
    rows = listing.draft_rows(out, task) if show_drafts else listing.run_rows(out, task)
    if as_json:
        typer.echo(json.dumps(files.finite(rows), indent=2, allow_nan=False))
        return
    if not rows:
        what = "interrupted trainings" if show_drafts else "runs"
        typer.echo(f"no {what} in {out}" + ("" if show_drafts else "; train one with 'seqapp train TASK'"))
        return
    for row in rows:
        if show_drafts:
            typer.echo(f"{row['task']:<10} {row['draft']:<56} {row['progress']}")
        else:
            typer.echo(f"{row['task']:<10} {row['run']:<48} {row['cell']:>9}x{row['units']:<5} "
                       f"{row['epochs'] or '?':>3} ep  {row['headline']}")


def remove_drafts(out: Path, task: str | None, targets: list[Path], damaged: bool) -> None:
    """``seqapp runs --clean-drafts [DRAFT...] [--damaged]``: delete only the drafts named, all checked first."""
    if not targets and not damaged:
        raise SeqappError("--clean-drafts deletes only the drafts it is given: name them (seqapp runs --clean-drafts "
                          "DRAFT..., see 'seqapp runs --drafts'), or add --damaged for those that cannot be resumed")
    chosen = {drafts.removable(path): "" for path in targets}  # every one checked before any is deleted
    named = {path.resolve() for path in chosen}
    found = drafts.damaged(out, task) if damaged else []
    chosen |= {path: f" ({problem})" for path, problem in found if path.resolve() not in named}
    for path, why in chosen.items():
        drafts.remove(path)
        typer.echo(f"removed {path}{why}")
    if not chosen:
        typer.echo(f"no damaged drafts in {out}")


config_app = typer.Typer(help="Show task templates fully resolved, with every setting explained.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@handle_errors
def config_show(
    template: TemplateArgument,
    overrides: SetOption = None,
) -> None:
    """Print a template resolved, as YAML with each key's help and allowed values.

    Copy it to start a template of your own: seqapp config show TASK > my.yaml
    """
    from seqapp import configdoc
    from seqapp.tasks import load_config

    typer.echo(configdoc.commented_yaml(load_config(template, overrides or [])), nl=False)
