"""Figures for a paper: --format and --dpi, fields drawn cell for cell, no text below
8 pt, every colour bar labelled with its own quantity (common/figures.py)."""
import base64
import io
import re

import matplotlib
import numpy as np
import pytest
from matplotlib import cm, colors
from PIL import Image

from common import figure_options, figures

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def settings(monkeypatch):
    """The --format / --dpi a script's cli.start sets, restored afterwards."""
    def set_(fmt="png", dpi=None):
        monkeypatch.setattr(figure_options, "FORMAT", fmt)
        monkeypatch.setattr(figure_options, "DPI", dpi)
    set_()
    return set_


@pytest.mark.parametrize("n, dpi", [(20, 90), (256, 90), (37, 150)])
def test_fields_are_drawn_cell_for_cell(tmp_path, settings, n, dpi):
    """Every cell is an s x s block of exactly its colour: the PNG holds the field as
    imsave would write it (enlarged by an integer), never resampled between cells."""
    settings(dpi=dpi)
    rng = np.random.default_rng(n)
    fields = [rng.random((n, n)).astype(np.float32) for _ in range(3)]
    path = figures.save_fields(tmp_path / "f.png", fields, ["a", "b\nc", "d"], ncols=2,
                               suptitle="title")
    img = np.asarray(Image.open(path).convert("RGBA"))
    geo = figures.field_layout((n, n), 3, 2, dpi, title_lines=2, suptitle=True)
    s, (pw, ph) = geo["scale"], geo["panel"]
    assert s >= 1 and img.shape[:2] == geo["size"][::-1]
    mapper = cm.ScalarMappable(colors.Normalize(0, 1), figures.CMAP)
    for field, (x, y) in zip(fields, geo["panels"]):
        want = np.repeat(np.repeat(mapper.to_rgba(field, bytes=True), s, 0), s, 1)
        assert np.array_equal(img[y:y + ph, x:x + pw], want)


def test_format_and_dpi_reach_every_saved_figure(tmp_path, settings):
    settings("pdf", 150)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1])
    path = figures.save_figure(fig, tmp_path / "x.png")
    assert path == tmp_path / "x.pdf" and path.read_bytes()[:4] == b"%PDF"
    settings("png", 150)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1])
    assert Image.open(figures.save_figure(fig, tmp_path / "y.png")).size == (300, 300)


def test_an_image_never_gets_less_than_a_pixel_per_cell(tmp_path, settings):
    settings(dpi=60)
    fig = plt.figure(figsize=(2, 2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.random.default_rng(0).random((400, 400)))
    ax.axis("off")
    path = figures.save_figure(fig, tmp_path / "big.png", layout=False)
    assert min(Image.open(path).size) >= 400          # 60 dpi would give 120 px


def test_svg_embeds_the_field_unresampled(tmp_path, settings):
    settings("svg")
    path = figures.save_fields(tmp_path / "f.png", [np.random.default_rng(1).random((13, 13))],
                               ["a"])
    embedded = re.findall(r'data:image/png;base64,([A-Za-z0-9+/=\s]+)"', path.read_text())
    sizes = [Image.open(io.BytesIO(base64.b64decode(e))).size for e in embedded]
    assert (13, 13) in sizes


def test_no_text_is_smaller_than_8_points(tmp_path, settings, monkeypatch):
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    fig, ax = plt.subplots()
    ax.plot([0, 1], label="a line")
    ax.legend(fontsize=5)
    ax.set_xticks([0, 1], ["zero", "one"], fontsize=6)
    ax.text(0.5, 0.5, "note", fontsize=4)
    figures.save_figure(fig, tmp_path / "t.png")
    sizes = [t.get_fontsize() for t in closed[0].findobj(matplotlib.text.Text) if t.get_text()]
    monkeypatch.undo()
    plt.close(closed[0])
    assert sizes and min(sizes) >= figures.MIN_FONT_PT


def test_plot_matrix_needs_its_quantity():
    fig, ax = plt.subplots()
    with pytest.raises(TypeError):
        figures.plot_matrix(ax, [[1.0]], ["a"], ["a"], "t")   # no default label to be wrong
    plt.close(fig)


def test_cue_specificity_labels_each_colour_bar_with_its_metric(tmp_path, settings, monkeypatch):
    import torch

    from experiments import cue_specificity

    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    block = {"mean": [[0.5, 0.2], [0.1, 0.7]]}
    mx = {"cues": ["cue A", "cue B"], "patterns": ["A", "B"], "cosine": block, "iou": block,
          "initial": {"cosine": block}, "control": {"cosine": block}}
    cue_specificity.plot({"matrix": mx}, torch.zeros(3, 2, 4, 4), {}, tmp_path, fields=False)
    fig = closed[0]
    monkeypatch.undo()
    labels = {ax.get_title(): ax.images[0].colorbar.ax.get_ylabel()
              for ax in fig.axes if ax.images}
    plt.close(fig)
    assert len(labels) == 4
    for title, label in labels.items():
        assert ("IoU" in label) == ("IoU" in title), (title, label)
        assert ("cosine" in label) == ("cosine" in title), (title, label)
