"""Typed configuration: a YAML template plus command-line overrides.

A template is a YAML mapping with ``task``, an optional ``description`` and three
sections, ``data``, ``model`` and ``train``. Each section is a dataclass; the task
chooses the dataclasses for ``data`` and ``model`` (``Task.DataConfig``,
``Task.ModelConfig``), while ``train`` is shared. :func:`build` is handed the task class
by its caller (``seqapp.tasks.load_config``, the one place that looks tasks up by name).
Every value is checked against its field's type and allowed range, so a mistake is
reported with the key, the bad value and what is allowed, before any training starts.

Each field's help text and its range or choices live beside it, in its metadata, so
they are documented once (``seqapp config show``, the settings reference, docs/settings.md)::

    units: int = setting(256, "units per recurrent layer", min=1)
    cell: str = setting("lstm", "recurrent cell of every layer", choices=("simplernn", "lstm", "gru"))
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqapp.errors import SeqappError

CELLS = ("simplernn", "lstm", "gru")


def setting(default: Any = None, help: str = "", *, factory: Any = None, choices: Any = None,
            min: float | None = None, max: float | None = None,
            low_open: bool = False, high_open: bool = False) -> Any:
    """A config field with its help text and allowed values, documented in one place.

    ``seqapp config show`` and docs/settings.md (the settings reference) are written from this
    metadata, and :func:`check_value` enforces it::

        units: int = setting(256, "units per recurrent layer", min=1)
    """
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if min is not None:
        meta.update(min=min, low_open=low_open)
    if max is not None:
        meta.update(max=max, high_open=high_open)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """The recurrent stack every task builds (see ``seqapp.layers``)."""

    cell: str = setting("lstm", "recurrent cell of every layer", choices=CELLS)
    units: int = setting(256, "units per recurrent layer (per direction when bidirectional)", min=1, max=8192)
    layers: int = setting(1, "stacked recurrent layers; all but the last return sequences", min=1, max=64)
    dropout: float = setting(0.0, "rate of the Dropout layer after each recurrent layer; 0: none",
                             min=0.0, max=1.0, high_open=True)
    bidirectional: bool = setting(False, "read each sequence both ways (Bidirectional wrapper)")
    embedding_dim: int = setting(64, "size of the token embedding vectors", min=1, max=8192)


@dataclass
class TrainConfig:
    """Optimiser and training-loop settings shared by all tasks."""

    epochs: int = setting(10, "maximum number of epochs (early stopping may end sooner)", min=1, max=100_000)
    batch_size: int = setting(64, "examples per training step", min=1, max=65536)
    learning_rate: float = setting(0.002, "Adam's learning rate", min=0.0, max=10.0, low_open=True)
    lr_schedule: str = setting("constant", "constant, or cosine: decay from learning_rate to 2% of it over all epochs",
                               choices=("constant", "cosine"))
    clipnorm: float = setting(1.0, "clip each gradient to this norm; 0 turns clipping off", min=0.0)
    patience: int = setting(3, "early stopping: epochs without a better validation loss; 0 turns it off", min=0)
    random_seed: int = setting(0, "seed of weights, shuffling and dropout (--random-seed)", min=0)
    checkpoint_every: int = setting(0, "also save the training state every this many batches, not only at each "
                                    "epoch's end; 0: epoch ends only", min=0)
    litert: bool = setting(True, "at the end of training, convert the graphs that answer queries to LiteRT (generate, "
                           "predict and serve then run without TensorFlow); false: skip the conversion, answer on tf")
    # On a CPU XLA trains fixed-length LSTM windows about twice as fast, after a few seconds
    # of compiling; inputs whose length changes from batch to batch recompile every time.
    jit_compile: bool | None = setting(None, "XLA-compile the training step; null: Keras's choice (off on CPUs); "
                                       "keep it off for inputs of varying length")
    # model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585): seqapp.distribute.
    distribute: str = setting("auto", "tf.distribute strategy; auto: multi_worker when TF_CONFIG names several "
                              "workers, mirrored with several GPUs, else none; batch_size is per replica",
                              choices=("auto", "none", "mirrored", "multi_worker"))
    # seqapp.distribute.wait_for_peers: a lone worker would otherwise wait inside TensorFlow, silent, for good.
    peer_wait_s: float = setting(300.0, "multi_worker: seconds a worker waits for the other workers TF_CONFIG names "
                                 "to start before it gives up (exit 2)", min=0.0, max=86400.0, low_open=True)
    # The output layer stays float32 (seqapp.layers.output_head); weights are float32 either way.
    mixed_precision: str = setting("none", "compute in 16 bits, keep weights in float32: mixed_float16 (GPUs), "
                                   "mixed_bfloat16 (recent GPUs, TPUs, some CPUs); none: all float32",
                                   choices=("none", "mixed_float16", "mixed_bfloat16"))
    # seqapp.fastrnn: faster where per-step weight gradients dominate (batch 64: textgen LSTM-256 about 1.5-2x);
    # slower for the sine models (batch 256, one input feature, last output only): their templates turn it off.
    fast_rnn: bool = setting(True, "train LSTM/GRU/SimpleRNN layers with seqapp's CPU loop: one input projection, "
                             "weight gradients as single large products (same weights, stock layers saved); "
                             "false: Keras's own loop")
    # seqapp.fastrnn.keep_freed_memory: glibc's mallopt, process-wide and for good; applied
    # only when fast_rnn gives at least one layer the fast loop.
    keep_freed_memory: bool = setting(True, "with fast_rnn: have glibc keep freed memory for reuse (no mmap for "
                                      "large blocks), so a step does not page its buffers in again; process-wide, "
                                      "the process keeps its peak memory; false: the C library's defaults")
    # seqapp.metrics.fit_temperature; tasks without class probabilities refuse it (Task.calibrates).
    calibrate: bool = setting(False, "after training, fit one temperature on the validation split that divides the "
                              "logits (sentiment, tagging), so probabilities match how often they are right; "
                              "labels never change")
    # seqapp.tensorboard_log: written with TensorFlow alone; viewing them needs the [tensorboard] extra.
    tensorboard: bool = setting(True, "write TensorBoard event files under the run's logs/: every history.csv "
                                "column per epoch, and the task's sample (a generated text, a few translations) "
                                "after each epoch; false: none")


@dataclass
class Config:
    """A resolved configuration: exactly what a run is trained with."""

    task: str
    data: Any
    model: Any
    train: TrainConfig
    description: str = ""

    def to_dict(self) -> dict:
        """The config as plain YAML-ready values, in template order."""
        return {
            "task": self.task,
            "description": self.description,
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }


SECTIONS = ("data", "model", "train")


MAX_YAML_BYTES = 1024**2  # largest template or run config read
MAX_YAML_ALIASES = 100  # YAML aliases (*name) one file may use
MAX_YAML_DEPTH = 50  # nesting of lists and mappings
MAX_YAML_NODES = 100_000  # values a file may expand to once its aliases are followed


def read_yaml(path: Path, what: str = "template") -> dict:
    """Read a template (or a run's config, ``what``) into a mapping, with clear errors.

    The file is read bounded (a regular file of at most ``MAX_YAML_BYTES``) and its YAML is
    composed under limits on aliases, nesting and expanded size before any value is built,
    so an alias bomb ("billion laughs") or a deeply nested file is refused at once.
    """
    from seqapp import datafiles

    raw_bytes = datafiles.read_bytes(path, what, "check the path or run 'seqapp tasks'", limit=MAX_YAML_BYTES)
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw_bytes[: exc.start].count(b"\n") + 1
        raise SeqappError(f"{what} {path} is not UTF-8 text (bad byte at line {line}); re-save it as UTF-8") from None
    try:
        raw = load_bounded(text)
    except YamlRefused as exc:  # re-raised here so no traceback frame holds a (huge to print) YAML node
        raise SeqappError(f"{what} {path} {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise SeqappError(f"{what} {path} is not valid YAML{line}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise SeqappError(f"{what} {path} is not a YAML mapping; write it as keys 'task', 'data', 'model' and 'train'")
    return raw


class YamlRefused(Exception):
    """YAML over a limit or with an unreadable value; the message follows the file's name."""


def load_bounded(text: str) -> Any:
    """``yaml.safe_load(text)`` within ``MAX_YAML_ALIASES``, ``MAX_YAML_DEPTH`` and ``MAX_YAML_NODES``."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node) if loader.aliases else 0
        if size > MAX_YAML_NODES:
            raise YamlRefused(f"expands to {size:,} values through its YAML aliases "
                              f"(at most {MAX_YAML_NODES:,} allowed); write the values out instead")
        return loader.construct_document(node)
    finally:
        loader.dispose()


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses too many aliases or too deep nesting while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.aliases, self.depth = 0, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise YamlRefused(f"uses more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                                  "write the values out instead")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise YamlRefused(f"nests lists or mappings more than {MAX_YAML_DEPTH} deep (at line {line}); "
                                  "flatten it")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # e.g. 2024-13-01, !!int x
            raise YamlRefused(f"has a value YAML cannot read at line {node.start_mark.line + 1} ({exc}); "
                              "fix the value or quote it") from None


def expanded_size(root: yaml.Node) -> int:
    """How many values ``root`` holds once its aliases are followed (YamlRefused if one holds itself).

    Each distinct node is sized once (an alias shares its anchor's node), so a billion-laughs
    file is measured in microseconds, without building anything.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = yaml_children(node)
        if finished:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            open_nodes.discard(id(node))
        elif id(node) in open_nodes:
            raise YamlRefused(f"has a YAML alias inside its own anchor (line {node.start_mark.line + 1}); "
                              "write the values out instead")
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)
    return sizes[id(root)]


def yaml_children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes directly inside a sequence or mapping node (keys and values); none for a scalar."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def build(raw: dict, task: Any, overrides: Sequence[str] = (), source: str = "template",
          values: dict | None = None) -> Config:
    """Turn a template mapping plus overrides into a validated Config for ``task``.

    ``task`` is the task class named by ``raw['task']`` (its ``DataConfig``, ``ModelConfig``
    and ``validate_config`` are used; see :func:`task_name` and ``seqapp.tasks.load_config``).
    ``overrides`` are ``section.key=value`` strings whose value is parsed as YAML (``--set``);
    ``values`` maps ``section.key`` to already-typed values (``--data``, ``--epochs``).
    """
    raw = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for override in overrides:
        apply_override(raw, override)
    for key, value in (values or {}).items():
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = value
    sections = {"data": task.DataConfig, "model": task.ModelConfig, "train": TrainConfig}
    built = {}
    for name, cls in sections.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise SeqappError(f"'{name}' in {source} must be a mapping of settings, got {section!r}")
        built[name] = make_section(cls, section, name)
    cfg = Config(task=task.name, description=str(raw.get("description") or ""), **built)
    if cfg.train.calibrate and not getattr(task, "calibrates", False):
        raise SeqappError(f"train.calibrate does not apply to {task.name} runs: it scales class probabilities, "
                          f"which a {task.name} model does not give; remove the setting")
    task.validate_config(cfg)
    return cfg


def task_name(raw: dict, source: str) -> str:
    """The ``task`` of a template mapping, after checking its top-level keys."""
    unknown = set(raw) - {"task", "description", *SECTIONS}
    if unknown:
        raise SeqappError(
            f"unknown key '{sorted(unknown)[0]}' in {source}; allowed top-level keys: task, description, "
            + ", ".join(SECTIONS)
        )
    if "task" not in raw:
        raise SeqappError(f"{source} has no 'task' key; add e.g. 'task: textgen'")
    return str(raw["task"])


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``section.key=value`` override; the value is parsed as YAML."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise SeqappError(f"bad --set '{override}'; use --set section.key=value, e.g. --set model.units=512")
    section, name = parts
    if section not in SECTIONS:
        raise SeqappError(f"bad --set '{override}': unknown section '{section}'; use one of {', '.join(SECTIONS)}")
    try:
        value = load_bounded(text) if text.strip() else None
    except (yaml.YAMLError, YamlRefused):
        value = text
    raw.setdefault(section, {})
    if raw[section] is None:
        raw[section] = {}
    raw[section][name] = value


def make_section(cls: type, values: dict, section: str) -> Any:
    """Build dataclass ``cls`` from ``values``, checking names, types and ranges."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            allowed = ", ".join(fields)
            raise SeqappError(f"unknown key '{section}.{key}'; allowed keys in '{section}': {allowed}")
        kwargs[key] = check_value(f"{section}.{key}", value, hints[key], fields[key].metadata)
    return cls(**kwargs)


def check_value(key: str, value: Any, hint: Any, meta: dict) -> Any:
    """Return ``value`` converted to ``hint``'s type, or raise a SeqappError naming ``key``."""
    value = coerce(key, value, hint)
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        allowed = ", ".join(str(choice) for choice in meta["choices"])
        raise SeqappError(f"{key}={value!r} is not allowed; choose one of: {allowed}")
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise SeqappError(f"{key}={value!r} is not a finite number; give an ordinary number")
        if "min" in meta and (item < meta["min"] or (meta.get("low_open") and item == meta["min"])):
            raise SeqappError(f"{key}={value!r} is out of range; {describe_range(meta)}")
        if "max" in meta and (item > meta["max"] or (meta.get("high_open") and item == meta["max"])):
            raise SeqappError(f"{key}={value!r} is out of range; {describe_range(meta)}")
    return value


def describe_range(meta: dict) -> str:
    """Say in words which values a range metadata allows."""
    low = f"> {meta['min']}" if meta.get("low_open") else f">= {meta['min']}"
    if "max" not in meta:
        return f"it must be {low}"
    high = f"< {meta['max']}" if meta.get("high_open") else f"<= {meta['max']}"
    return f"it must be {low} and {high}"


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a type hint (int, float, bool, str, list[T], T | None)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return coerce(key, value, inner)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise SeqappError(f"{key}={value!r} must be a list, e.g. [1, 2]")
        return [coerce(key, item, args[0]) for item in value]
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            pass
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))
    raise SeqappError(f"{key}={value!r} has the wrong type; expected {expected}")


def save(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def template_dir() -> Path:
    """The folder of bundled templates (top-level ``tasks/``, shipped as seqapp.templates)."""
    from importlib.resources import files

    return Path(str(files("seqapp.templates")))


def templates() -> dict[str, Path]:
    """Bundled templates by name (file stem), sorted."""
    return {path.stem: path for path in sorted(template_dir().glob("*.yaml"), key=lambda path: path.stem)}


def resolve_template(name_or_path: str) -> Path:
    """Find a template by bundled name (``textgen``) or by file path (``my.yaml``)."""
    import difflib

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not (path.exists() or path.is_symlink()):  # a FIFO or a link loop: read_yaml says which
            raise SeqappError(f"template file {name_or_path} does not exist; check the path")
        return path
    known = templates()
    if name_or_path in known:
        return known[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(known), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SeqappError(
        f"unknown task or template '{name_or_path}'; {hint}run 'seqapp tasks' to list them, "
        "or give a path to a .yaml template"
    )
