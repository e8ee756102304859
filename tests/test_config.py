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
        ("- just\n- a list\n", "must be a YAML mapping"),
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
    from seqapp.training import optimizer

    constant = optimizer(load_config("textgen").train)
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


def test_every_setting_has_help_and_the_readme_tables_match_the_code():
    from seqapp import configdoc
    from seqapp.tasks import REGISTRY

    for task in REGISTRY.values():
        for section in (task.DataConfig, task.ModelConfig, config.TrainConfig):
            for field, _ in configdoc.fields_of(section):
                assert field.metadata.get("help"), f"{section.__name__}.{field.name} has no help"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert configdoc.readme_section(readme) == configdoc.settings_markdown(), \
        "README settings tables are stale: run 'python -m seqapp.configdoc README.md'"


def test_readme_table_shows_the_template_value_and_the_default_when_left_out():
    from seqapp import configdoc

    rows = {line.split("|")[1].strip(): line for line in configdoc.markdown_table(load_config("sine"))
            if line.startswith("| `")}
    template_window = load_config("sine").data.window
    default_window = get_task("sine").DataConfig().window
    assert f"`{template_window}`" in rows["`data.window`"].split("|")[2]
    if template_window != default_window:
        assert f"`{default_window}`" in rows["`data.window`"].split("|")[3]
