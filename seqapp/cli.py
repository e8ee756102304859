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

from seqapp import (
    api,
    backend,
    completion,
    drafts,
    exporting,
    files,
    interactive,
    launch,
    listing,
    progress_bar,
    runs,
    serve,
)
from seqapp.engines import check_engine, choose_engine, start_engine
from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY, find_run, get_task
from seqapp.version import __version__

app = typer.Typer(
    help="Train and use recurrent neural networks (SimpleRNN, LSTM, GRU) on sequence data.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RUNS_ROOT = Path("runs")
OutOption = Annotated[Path, typer.Option("--out", envvar="SEQAPP_RUNS", help="Folder that holds the runs.",
                                         autocompletion=completion.folders)]
RunOption = Annotated[Path | None, typer.Option("--run", help="A run folder; default: the latest suitable run.",
                                                autocompletion=completion.run_folders)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TemplateArgument = Annotated[str, typer.Argument(
    help="Task or template name (see 'seqapp tasks'), or a .yaml template path.", autocompletion=completion.templates)]
InteractiveOption = Annotated[bool, typer.Option(
    "--interactive", "-i", help="Keep the run loaded and answer each line of stdin (a prompt and line editing on a "
                                "terminal); :help lists the commands that change the settings; Ctrl-D ends.")]
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
        metavar="TASK|DRAFT", show_default=False, autocompletion=completion.templates,
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
    like: Annotated[Path | None, typer.Option(
        "--like", help="Train again with this run's exact settings (its config.yaml) on its data; refused when "
                       "its data file changed since (see --allow-changed-data). --set, --epochs and "
                       "--random-seed still apply.")] = None,
    from_run: Annotated[Path | None, typer.Option(
        "--from", help="Fine-tune this run on --data: its vocabulary, model and trained weights, its settings "
                       "(--set train.* may change them), into a new run folder; the run itself is only read.")] = None,
    allow_changed_data: Annotated[bool, typer.Option(
        "--allow-changed-data", help="With --like: train even when the run's data file changed since it was "
                                     "trained (a warning line says how).")] = False,
) -> None:
    """Train a model from a task template and save it as a run (Ctrl-C saves the state to resume)."""
    if resume:
        run = resume_training(task, out, quiet, data=data, epochs=epochs, name=name, random_seed=random_seed,
                              overrides=overrides, like=like, from_run=from_run,
                              allow_changed_data=allow_changed_data or None)
    else:
        task, origin = run_origin(task, data, like, from_run, allow_changed_data)
        run = new_training(task, data, epochs, out, name, random_seed, overrides or [], quiet, origin)
    typer.echo(f"saved run {run.path}")
    summary = get_task(run.task)().headline(run.metrics)
    if summary:
        typer.echo(summary)


def new_training(task: str | None, data: Path | None, epochs: int | None, out: Path, name: str | None,
                 random_seed: int | None, overrides: list[str], quiet: bool, origin: dict | None = None) -> runs.Run:
    """``seqapp train TASK``: resolve the template, check the data, train and save a run (one
    ``origin`` names as repeated or fine-tuned, :func:`run_origin`)."""
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
    if origin and origin.get("from"):
        from seqapp import finetune
        from seqapp.tasks import load_run

        finetune.check_settings(load_run(Path(origin["from"])), cfg)
    if data is not None and not data.is_dir():  # a folder is the task's to accept or refuse
        from seqapp import datafiles

        datafiles.read_text(data)  # fail fast on a missing/empty/binary file, before TensorFlow starts
    get_task(cfg.task).check_sources(cfg)  # e.g. pretrained vectors: their first lines, before TensorFlow starts
    drafts.task_folder(out, cfg.task)  # an unwritable --out, before TensorFlow starts
    backend.start()
    from seqapp.training import train as train_run

    return train_run(cfg, out, name, verbose=0 if quiet else None, origin=origin)


def run_origin(task: str | None, data: Path | None, like: Path | None, from_run: Path | None,
               allow_changed_data: bool) -> tuple[str | None, dict | None]:
    """For ``train --like RUN`` and ``--from RUN``: the run's config.yaml as the template, and the
    origin its provenance records, after the cheap checks (the run loads; --like: its data is
    unchanged); ``(task, None)`` for any other training."""
    import os

    from seqapp import provenance
    from seqapp.tasks import load_config, load_run

    if like is None and from_run is None:
        if allow_changed_data:
            raise SeqappError("--allow-changed-data goes with --like RUN; drop it")
        return task, None
    if like is not None and from_run is not None:
        raise SeqappError("--like repeats a run on its own data and --from fine-tunes one on new data; choose one")
    option, base = ("--like", load_run(like)) if like is not None else ("--from", load_run(from_run))
    if task is not None:
        named = load_config(task).task
        if named != base.task:
            raise SeqappError(f"{option} {base.path}: that is a {base.task} run, not a {named} one; drop '{task}'")
        raise SeqappError(f"{option} trains with the run's own settings (its config.yaml), not a template's; drop "
                          f"'{task}' (change settings with --set)")
    template, where = str(base.path / "config.yaml"), os.path.abspath(base.path)
    if like is not None:
        if data is not None:
            raise SeqappError(f"--like trains on the run's own data; drop --data, or fine-tune the run on it: "
                              f"seqapp train --from {base.path} --data {data}")
        provenance.check_data(base.path, allow_changed_data)
        return template, {"like": where}
    if allow_changed_data:
        raise SeqappError("--allow-changed-data goes with --like RUN; drop it")
    if data is None:
        raise SeqappError(f"--from fine-tunes a run on new data; add --data FILE (seqapp train --from {base.path} "
                          "--data FILE)")
    return template, {"from": where}


def resume_training(draft: str | None, out: Path, quiet: bool, **settings: Any) -> runs.Run:
    """``seqapp train --resume [DRAFT]``: continue an interrupted training with its saved settings."""
    given = [key for key, value in settings.items() if value not in (None, [])]
    if given:
        option = {"overrides": "--set", "from_run": "--from"}.get(given[0], "--" + given[0].replace("_", "-"))
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
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON record per sample when done: seed, text (the seed and what follows) and "
                       "generated (what follows).")] = False,
    interactive_session: InteractiveOption = False,
) -> None:
    """Generate text that continues --seed with a text-generation run (streams to stdout); --interactive:
    a seed per line."""
    settings = {"length": length, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                "num_samples": num_samples, "random_seed": random_seed, "stop": stop,
                "no_repeat_ngram": no_repeat_ngram}
    api.check_generate(length, temperature, top_k, top_p, num_samples, stop, no_repeat_ngram)
    if interactive_session and seed:
        raise SeqappError("--seed is the seed of one generation; with --interactive each line read is a seed: "
                          "drop --seed")
    loaded = api.LoadedRun(find_run(run_dir, out, [name for name, cls in REGISTRY.items() if cls.generates]), engine)
    if interactive_session:
        return interactive.generate_session(loaded, settings, as_json)
    interactive.write_generation(loaded.stream(seed, **settings), as_json)


@app.command()
@handle_errors
def evaluate(
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
    as_json: JsonOption = False,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Score the run on all of this file instead of its held-out split, read as the run reads "
                       "its data (format, columns, the labels it knows) with its own vocabulary or normalisation; "
                       "the baseline is computed on it too. Nothing is written.")] = None,
    engine: EngineOption = "auto",
    errors: Annotated[int | None, typer.Option(
        "--errors", help="Also list the N worst-scored examples of the test split (or of --data), worst first, "
                         "by the task's own measure: highest loss, most wrong tags, lowest sentence BLEU or "
                         "largest forecast error.")] = None,
) -> None:
    """Metrics of a run on its held-out data (or on --data FILE), beside a naive baseline."""
    if errors is not None and errors < 1:
        raise SeqappError(f"--errors {errors} must be at least 1; give how many of the worst-scored examples to "
                          "list, e.g. --errors 10")
    check_engine(engine)
    run = find_run(run_dir, out)
    task = get_task(run.task)()
    chosen = choose_engine(task, run, engine)
    splits = task.new_data(run, data) if data is not None else task.load_data(run.config)  # before TensorFlow
    if chosen == "tf":
        backend.start()
        run.model  # noqa: B018 (a damaged model file is one error line, before any progress line)
    where = f" on {data}" if data is not None else ""
    typer.echo(f"evaluating {run.path}{where} ({chosen} engine)", err=True)
    with progress_bar.progress_bar(f"evaluating {run.path.name}", spinner=True):
        metrics = task.evaluate(run, splits, engine=chosen, errors=errors or 0)
    worst = metrics.pop("worst", None)
    if as_json:
        report = {"run": str(run.path), "task": run.task, **({"data": str(data)} if data is not None else {}),
                  "engine": chosen, "metrics": metrics, **({"worst": worst} if worst is not None else {})}
        typer.echo(json.dumps(files.finite(report), indent=2))
        return
    typer.echo(f"{run.task} run {run.path.name}{where}")
    for line in task.format_metrics(metrics):
        typer.echo(line)
    if worst is not None:
        split = metrics.get("split") or next((name for name in ("test", "val", "train") if name in metrics), "test")
        typer.echo(f"\nthe {len(worst)} worst-scored examples of the {split} split, worst first:")
        for line in task.format_worst(worst):
            typer.echo(f"  {line}")


def predict(
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Inputs (texts, seeds); '-' reads one per line from stdin.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read inputs from this file, one per line.")] = None,
    run_dir: RunOption = None,
    out: OutOption = RUNS_ROOT,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the predictions to this file instead of stdout.")] = None,
    engine: EngineOption = "auto",
    interactive_session: InteractiveOption = False,
    **task_options: Any,
) -> None:
    """Use the latest run (or --run) on new inputs and print the results; --interactive: an input per line."""
    if interactive_session:
        return interactive.predict_session(find_run(run_dir, out), engine, task_options, inputs, file, output)
    texts = read_inputs(inputs or [], file)
    run = find_run(run_dir, out)
    task = get_task(run.task)()
    given = api.check_predict(task, run, texts, task_options)
    if output is not None and not output.parent.is_dir():
        raise SeqappError(f"--output {output}: folder {output.parent} does not exist; create it first")
    if start_engine(task, run, engine) == "litert":
        given["engine"] = "litert"
    with progress_bar.progress_bar("predicting"):  # what decodes at once (beam search) shows its progress
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
    with progress_bar.progress_bar(f"exporting {run.path.name} ({fmt})", spinner=True):
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
        metavar="[RUN|DRAFT]...", show_default=False,
        help="With --compare or --delete: run folders; with --clean-drafts: the draft folders to delete "
             "(see 'seqapp runs --drafts').")] = None,
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
    compare: Annotated[bool, typer.Option(
        "--compare", help="Show the runs named (RUN RUN...) side by side: the settings that differ, then epochs, "
                          "best validation loss and headline metric.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="With --compare: overlay the runs' learning curves in this PNG file.")] = None,
    delete: Annotated[bool, typer.Option(
        "--delete", help="Delete the runs named (RUN...), after a confirmation; never anything but run "
                         "folders.")] = False,
    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", help="Delete all but the N newest runs of each task (of --task), after a "
                            "confirmation.")] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="With --delete or --keep-last: delete without asking (needed when stdin is not a "
                            "terminal).")] = False,
) -> None:
    """List past runs with their headline metrics, oldest first; compare, delete or tidy them."""
    if task is not None:
        get_task(task)
    check_runs_options(targets or [], task, show_drafts, clean_drafts, compare, plot, delete, keep_last, yes)
    if clean_drafts:
        return remove_drafts(out, task, targets or [], damaged)
    if compare:
        return compare_runs(targets or [], plot, as_json)
    if delete or keep_last is not None:
        return remove_runs(out, task, targets or [], keep_last, yes)
    if targets or damaged:
        what = "a DRAFT folder" if targets else "--damaged"
        raise SeqappError(f"{what} goes with --clean-drafts (seqapp runs --clean-drafts DRAFT..., or "
                          "--clean-drafts --damaged), a RUN folder with --compare or --delete; to list the drafts: "
                          "seqapp runs --drafts")
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


def check_runs_options(targets: list[Path], task: str | None, show_drafts: bool, clean_drafts: bool, compare: bool,
                       plot: Path | None, delete: bool, keep_last: int | None, yes: bool) -> None:
    """The combinations of ``seqapp runs`` options that cannot work, refused before anything is read."""
    modes = [flag for flag, on in (("--drafts", show_drafts), ("--clean-drafts", clean_drafts), ("--compare", compare),
                                   ("--delete", delete), ("--keep-last", keep_last is not None)) if on]
    if len(modes) > 1:
        raise SeqappError(f"{modes[0]} and {modes[1]} do different things; give one of them")
    if plot is not None and not compare:
        raise SeqappError("--plot goes with --compare; seqapp runs --compare RUN RUN... --plot curves.png")
    if yes and not (delete or keep_last is not None):
        raise SeqappError("--yes goes with --delete RUN... or --keep-last N; drop it")
    if (compare or delete) and task is not None:
        raise SeqappError(f"--task chooses runs to list or keep; {modes[0]} takes the runs it names; drop --task")
    if compare and len(targets) < 2:
        raise SeqappError("--compare needs at least two runs; name them: seqapp runs --compare RUN RUN... (see "
                          "'seqapp runs')")
    if delete and not targets:
        raise SeqappError("--delete removes only the runs it is given: seqapp runs --delete RUN... (see "
                          "'seqapp runs'); or keep the newest with --keep-last N")
    if keep_last is not None and keep_last < 1:
        raise SeqappError(f"--keep-last {keep_last} would keep no run; give the number of newest runs to keep of each "
                          "task, at least 1 (to delete named runs: --delete RUN...)")
    if keep_last is not None and targets:
        raise SeqappError("--keep-last takes no RUN folders; to delete the runs named: seqapp runs --delete RUN...")
    if plot is not None and (plot.is_dir() or not plot.parent.is_dir()):
        where = "is a folder; give a file name such as curves.png" if plot.is_dir() else \
            f"is in a folder that does not exist ({plot.parent}); create it or choose another path"
        raise SeqappError(f"--plot {plot} {where}")


def compare_runs(targets: list[Path], plot: Path | None, as_json: bool) -> None:
    """``seqapp runs --compare RUN RUN... [--plot PNG]``: the runs side by side, their curves overlaid."""
    found = listing.comparison(targets)
    if plot is not None:
        from seqapp.plots import plot_histories

        names = [Path(row["run"]).name for row in found["runs"]]
        labels = names if len(set(names)) == len(names) else [row["run"] for row in found["runs"]]
        plot_histories({label: row["history"] for label, row in zip(labels, found["runs"])}, plot)
    if as_json:
        typer.echo(json.dumps(files.finite(found | {"plot": str(plot) if plot else None}), indent=2, allow_nan=False))
        return
    for line in listing.comparison_lines(found):
        typer.echo(line)
    if plot is not None:
        typer.echo(f"wrote {plot}", err=True)


def remove_runs(out: Path, task: str | None, targets: list[Path], keep_last: int | None, yes: bool) -> None:
    """``seqapp runs --delete RUN...`` or ``--keep-last N``: every run checked, one confirmation, then deleted."""
    if not yes and not sys.stdin.isatty():
        raise SeqappError("deleting runs asks for a confirmation, and stdin is not a terminal; add --yes to delete "
                          "without asking (nothing was removed)")
    chosen = [listing.removable(path) for path in targets] if keep_last is None else \
        listing.beyond_last(out, task, keep_last)  # every one checked before any is deleted
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        typer.echo(f"no runs to delete in {out}: each task has {keep_last} or fewer")
        return
    if not yes:
        for path in chosen:
            typer.echo(f"  {path}")
        if not typer.confirm(f"delete these {len(chosen)} run(s)?", default=False):
            typer.echo("nothing was removed")
            return
    for path in chosen:
        runs.remove(path)
        typer.echo(f"removed {path}")


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


@app.command()
@handle_errors
def tune(
    template: Annotated[str | None, typer.Argument(
        metavar="TEMPLATE|SEARCH", show_default=False,
        help="Task or template name (see 'seqapp tasks'), or a .yaml template path; with --resume, the search "
             "folder to go on with (default: the newest unfinished one under --out).")] = None,
    searches: Annotated[list[str] | None, typer.Option(
        "--search", help="A setting and the values to try (repeatable): a list, model.units=64,128,256; a range, "
                         "model.dropout=0.1..0.5; a log range, train.learning_rate=1e-4..1e-2:log.")] = None,
    trials: Annotated[int | None, typer.Option(
        "--trials", help="Trials in all, trial 0 (the template's own settings) included.  [default: 10]")] = None,
    method: Annotated[str, typer.Option(
        "--method", help="bayesian: KerasTuner's Bayesian optimisation (a Gaussian process) after random first "
                         "trials; random: random search.")] = "bayesian",
    objective: Annotated[str, typer.Option(
        "--objective", help="What the best run has: the lowest val_loss, or the highest val_accuracy "
                            "(tasks that measure accuracy).")] = "val_loss",
    max_minutes: Annotated[float | None, typer.Option(
        "--max-minutes", help="Start no new trial after this many minutes of search (the running one "
                              "finishes).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Data file to train on (default: the template's, else the bundled data).")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help="Maximum number of epochs of every trial (overrides train.epochs).")] = None,
    overrides: SetOption = None,
    out: OutOption = RUNS_ROOT,
    random_seed: Annotated[int | None, typer.Option(
        "--random-seed", help="Random seed of every trial's training and of the search (overrides "
                              "train.random_seed).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Go on with an interrupted search, with its saved settings (--trials and --max-minutes "
                         "may raise its limits); finished trials are not trained again.")] = False,
) -> None:
    """Search settings with KerasTuner: each trial is a run trained with --set values; names the best run."""
    from seqapp import tune as tuning

    if resume:
        given = {"--search": searches, "--data": data, "--epochs": epochs, "--set": overrides,
                 "--random-seed": random_seed, "--method": None if method == "bayesian" else method,
                 "--objective": None if objective == "val_loss" else objective}
        option = next((option for option, value in given.items() if value not in (None, [])), None)
        if option:
            raise SeqappError(f"--resume goes on with the search's saved settings; drop {option}, or start a new "
                              "search without --resume")
        search, plan = tuning.reopen(Path(template) if template else None, out, trials, max_minutes)
    else:
        if template is None:
            raise SeqappError("no template given; name a task or template to tune (see 'seqapp tasks'), or go on "
                              "with an interrupted search with --resume")
        search, plan, notes = tuning.start(
            template, searches or [], trials=10 if trials is None else trials, method=method, objective=objective,
            max_minutes=max_minutes, data=data, overrides=overrides or [], out=out, epochs=epochs,
            random_seed=random_seed)
        for note in notes:
            typer.echo(note, err=True)
    settings = search.settings
    typer.echo(f"search {search.path}: {settings['method']} search of {settings['trials']} trials on "
               f"{settings['objective']}" + (f", {len(search.trials)} done" if resume else ""), err=True)
    try:
        backend.start()
        tuning.run(search, plan, lambda line: typer.echo(line, err=True))
    except KeyboardInterrupt as exc:
        typer.echo(f"interrupted; the search is saved. resume with: {tuning.resume_command(search)}", err=True)
        raise typer.Exit(128 + getattr(exc, "signum", 2)) from None
    finally:
        search.unlock()
    for line in tuning.table(search):
        typer.echo(line)


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
