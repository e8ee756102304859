import os
import threading
import time
from pathlib import Path

import pytest

from seqapp import config
from seqapp.errors import SeqappError
from seqapp.tasks import get_task, load_config, load_saved_config


def test_every_bundled_template_loads():
    names = config.templates()
    assert {"textgen", "textgen-hello", "textgen-words"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.task


def test_set_parses_yaml_types():
    cfg = load_config("textgen", ["model.units=512", "model.cell=gru", "train.learning_rate=1e-3",
                                  "data.max_vocab=null"])
    assert cfg.model.units == 512 and isinstance(cfg.model.units, int)
    assert cfg.model.cell == "gru"
    assert cfg.train.learning_rate == pytest.approx(0.001)
    assert cfg.data.max_vocab is None


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.units=abc", ["model.units", "'abc'", "integer"]),
        ("model.cell=transformer", ["model.cell", "simplernn, lstm, gru"]),
        ("model.dropout=1.5", ["model.dropout", "< 1.0"]),
        ("model.colour=red", ["unknown key 'model.colour'", "units"]),
        ("optimizer.lr=3", ["unknown section 'optimizer'"]),
        ("units=3", ["section.key=value"]),
        ("train.epochs=0", ["train.epochs", ">= 1"]),
        ("model.bidirectional=maybe", ["model.bidirectional", "true or false"]),
        ("model.bidirectional=true", ["must not see the future"]),
    ],
)
def test_bad_values_are_named_in_the_error(override, words):
    with pytest.raises(SeqappError) as info:
        load_config("textgen", [override])
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("task: textgen\nmodel:\n  unitz: 3\n", "unknown key 'model.unitz'"),
        ("task: textgne\n", "unknown task 'textgne'; did you mean textgen"),
        ("task: textgen\nmodel: [1,\n", "not valid YAML at line"),
        ("- just\n- a list\n", "is not a YAML mapping"),
        ("task: textgen\ndata: 5\n", "'data' in template t.yaml must be a mapping"),
    ],
)
def test_bad_template_files(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(SeqappError, match=message):
        load_config(str(path))


def test_unknown_template_name_suggests_close_name():
    with pytest.raises(SeqappError, match="did you mean textgen"):
        load_config("textgne")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("textgen-words", ["model.units=7"])
    config.save(cfg, tmp_path / "config.yaml")
    assert load_saved_config(tmp_path / "config.yaml") == cfg


def test_a_folder_named_like_a_template_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "textgen").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("textgen").task == "textgen"


def test_train_settings_shared_by_all_tasks():
    cfg = load_config("textgen", ["train.lr_schedule=cosine", "train.jit_compile=null"])
    assert cfg.train.lr_schedule == "cosine" and cfg.train.jit_compile is None
    with pytest.raises(SeqappError, match="constant, cosine"):
        load_config("textgen", ["train.lr_schedule=step"])


def test_cosine_schedule_decays_to_two_percent():
    from seqapp.pipeline import optimizer

    constant = optimizer(load_config("textgen", ["train.learning_rate=0.003"]).train)
    assert float(constant.learning_rate) == pytest.approx(0.003)
    cfg = load_config("textgen", ["train.lr_schedule=cosine", "train.epochs=4", "train.learning_rate=0.01"]).train
    schedule = optimizer(cfg, steps_per_epoch=10)._learning_rate  # the schedule object behind the rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(40)) == pytest.approx(0.0002, rel=1e-3)


@pytest.mark.parametrize("template", sorted(config.templates()))
def test_config_show_prints_a_template_that_trains_the_same(cli, template, tmp_path):
    result = cli("config", "show", template, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert "# units per recurrent layer" in result.stdout
    copy = tmp_path / "copy.yaml"
    copy.write_text(result.stdout, encoding="utf-8")
    assert load_config(str(copy)) == load_config(template, ["train.epochs=2"])


def test_every_setting_has_help_and_the_settings_reference_matches_the_code():
    from seqapp import configdoc
    from seqapp.tasks import REGISTRY

    for task in REGISTRY.values():
        for section in (task.DataConfig, task.ModelConfig, config.TrainConfig):
            for field, _ in configdoc.fields_of(section):
                assert field.metadata.get("help"), f"{section.__name__}.{field.name} has no help"
    reference = (Path(__file__).resolve().parents[1] / configdoc.SETTINGS_DOC).read_text(encoding="utf-8")
    assert configdoc.readme_section(reference) == configdoc.settings_markdown(), \
        f"{configdoc.SETTINGS_DOC} is stale: run 'python -m seqapp.configdoc' in the repository root"


def test_settings_table_shows_the_template_value_and_the_default_when_left_out():
    from seqapp import configdoc

    rows = {line.split("|")[1].strip(): line for line in configdoc.markdown_table(load_config("sine"))
            if line.startswith("| `")}
    template_window = load_config("sine").data.window
    default_window = get_task("sine").DataConfig().window
    assert f"`{template_window}`" in rows["`data.window`"].split("|")[2]
    if template_window != default_window:
        assert f"`{default_window}`" in rows["`data.window`"].split("|")[3]


# -- hostile templates: refused at once, with one clear line --------------------------------
def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs" template: ``width ** levels`` leaves (10**9) from a few hundred bytes."""
    lines = ["task: textgen", "a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, words", [
    (alias_bomb(), ["t.yaml expands to 1,234,567,911 values through its YAML aliases", "at most 100,000 allowed",
                    "write the values out"]),
    ("task: textgen\nx: &x 1\ny: [" + ", ".join(["*x"] * 1000) + "]\n",
     ["t.yaml uses more than 100 YAML aliases", "write the values out"]),
    ("task: textgen\nloop: &loop [1, *loop]\n", ["t.yaml has a YAML alias inside its own anchor (line 2)"]),
    ("task: textgen\ndeep: " + "[" * 10_000 + "]" * 10_000 + "\n", ["nests lists or mappings more than 50 deep"]),
    ("task: textgen\nwhen: 2024-13-01\n", ["t.yaml has a value YAML cannot read at line 2", "month must be"]),
    ("task: textgen\nn: !!int twelve\n", ["cannot read at line 2", "fix the value or quote it"]),
    ("task: textgen\nn: 1" + "0" * 5000 + "\n", ["cannot read at line 2"]),
    ("task: textgen\n" + "# padding line\n" * 80_000, ["t.yaml is 1.1 MiB, over the limit of 1.0 MiB"]),
    ("task: textgen\ncaf\xe9: 1\n", ["t.yaml is not UTF-8 text (bad byte at line 2)"]),
], ids=["alias-bomb", "many-aliases", "self-alias", "deep", "bad-date", "bad-int", "huge-int", "over-1MiB", "latin-1"])
def test_hostile_templates_are_refused_fast_with_little_memory(tmp_path, text, words):
    import tracemalloc

    path = tmp_path / "t.yaml"
    path.write_bytes(text.encode("latin-1" if "\xe9" in text else "utf-8"))
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(SeqappError) as info:
            load_config(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 30.0  # no expansion: a bomb would take minutes (and GBs)
    assert peak < 64 * 1024**2
    for word in words:
        assert word in str(info.value)


def test_alias_bomb_is_refused_without_expanding_it(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    start = time.monotonic()
    with pytest.raises(SeqappError, match="expands to 1,234,567,911 values"):
        config.read_yaml(path)
    assert time.monotonic() - start < 30.0  # expanded, it would run for hours


def test_a_few_aliases_still_work(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: textgen\nsize: &size 16\nmodel: {units: *size, embedding_dim: *size}\n")
    raw = config.read_yaml(path)
    assert raw["model"] == {"units": 16, "embedding_dim": 16}


@pytest.mark.parametrize("make, words", [
    (lambda tmp: Path("/dev/zero"), ["template /dev/zero is a character device, not a regular file"]),
    (lambda tmp: os.mkfifo(tmp / "t.yaml") or tmp / "t.yaml", ["t.yaml is a named pipe (FIFO), not a regular file"]),
    (lambda tmp: (tmp / "t.yaml").symlink_to(tmp / "t.yaml") or tmp / "t.yaml", ["t.yaml is a symbolic link loop"]),
    (lambda tmp: tmp, ["is a folder, not a regular file"]),
    (lambda tmp: tmp / "gone.yaml", ["gone.yaml does not exist; check the path or run 'seqapp tasks'"]),
], ids=["dev-zero", "fifo", "symlink-loop", "folder", "missing"])
def test_template_paths_that_are_not_files_are_refused_without_reading(tmp_path, make, words):
    path = make(tmp_path)
    outcome: dict = {}

    def target() -> None:
        try:
            config.read_yaml(path)
        except SeqappError as exc:
            outcome["message"] = str(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(2.0)
    assert not worker.is_alive(), f"reading {path} hung"
    for word in words:
        assert word in outcome.get("message", "")


def test_template_over_the_limit_is_refused_by_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_YAML_BYTES", 100)
    path = tmp_path / "t.yaml"
    path.write_text("task: textgen\n" + "#" * 200 + "\n")
    with pytest.raises(SeqappError, match=r"t\.yaml is 215 bytes, over the limit of 100 bytes"):
        config.read_yaml(path)


def test_cli_refuses_an_alias_bomb_in_one_line(cli, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    result = cli("train", path, "--out", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: template {path} expands to 1,234,567,911 values through its YAML aliases "
        "(at most 100,000 allowed); write the values out instead"]
