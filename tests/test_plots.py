"""Shared figures: each writes a PNG, closes its figure, and turns a bad path into a SeqappError."""

from __future__ import annotations

import numpy as np
import pytest

from seqapp.errors import SeqappError
from seqapp.plots import attention_heatmap, plot_confusion, plot_history, pyplot, save_figure


def test_every_shared_plot_writes_a_png_and_closes_its_figure(tmp_path):
    plt = pyplot()
    plt.close("all")
    plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "learning_rate": [0.1, 0.1]}, tmp_path / "h.png")
    plot_confusion([[5, 1], [2, 7]], ["neg", "pos"], "test", tmp_path / "c.png")
    attention_heatmap(["I", "am", "cold"], ["j'ai", "froid", "</s>"], np.full((3, 3), 1 / 3), tmp_path / "a.png", "t")
    for name in ("h.png", "c.png", "a.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert plt.get_fignums() == []


@pytest.mark.parametrize("target, words", [
    ("missing/plot.png", ["missing", "folder does not exist"]),
    (".", ["is a folder", "file name"]),
])
def test_unwritable_path_is_a_seqapp_error_and_the_figure_is_closed(tmp_path, target, words):
    plt = pyplot()
    fig, _ = plt.subplots()
    with pytest.raises(SeqappError) as info:
        save_figure(fig, tmp_path / target)
    for word in words:
        assert word in str(info.value)
    assert not plt.fignum_exists(fig.number)
