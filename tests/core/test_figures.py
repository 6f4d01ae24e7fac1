"""Tests for common/figures.py: backend left alone, H.264 videos with a step counter,
bands never clipped, labelled colour bars, n in heat-map titles."""
import importlib

import matplotlib
import numpy as np
import pytest
import torch

from common import figures


def _decode(path):
    """(metadata, frames as (T, H, W, 3) uint8) of a video, read back with the ffmpeg
    binary imageio-ffmpeg ships."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, np.stack(frames)


def test_import_leaves_the_matplotlib_backend_alone():
    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        importlib.reload(figures)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
        importlib.reload(figures)


def test_video_is_h264_yuv420p_with_every_frame(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 15, 17, generator=g), torch.rand(9, 15, 17, generator=g)
    path = tmp_path / "v.mp4"
    assert figures.write_video(path, [a, b], ["scarred", "control"], steps=range(0, 70, 10),
                               scale=1) == "h264"
    meta, frames = _decode(path)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert len(frames) == 7                                  # the shorter panel wins
    w, h = meta["size"]
    assert w % 2 == 0 and h % 2 == 0 and (w, h) == (34, 16)  # 2 x 17 wide, 15 padded to 16
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
def test_video_burns_the_step_counter_into_each_frame(tmp_path):
    field = torch.full((3, 48, 48), 0.5)
    figures.write_video(tmp_path / "a.mp4", [field], ["V"], steps=[0, 1, 2])
    figures.write_video(tmp_path / "b.mp4", [field], ["V"], steps=[500, 600, 700])
    fa, fb = _decode(tmp_path / "a.mp4")[1], _decode(tmp_path / "b.mp4")[1]
    diff = np.abs(fa.astype(int) - fb.astype(int)).max(-1)      # (T, 96, 96)
    assert (diff[:, 64:, :48] > 60).any(axis=(1, 2)).all()      # the counter, lower left
    assert diff[:, :48, 48:].max() < 8                          # elsewhere: the same field
    with pytest.raises(ValueError, match="steps has 2 values for 3 frames"):
        figures.write_video(tmp_path / "c.mp4", [field], ["V"], steps=[0, 1])


class _Failing:
    """A (T, H, W) sequence whose frame 2 raises: an interrupted video write."""

    def __len__(self):
        return 4

    def __getitem__(self, t):
        if t == 2:
            raise KeyboardInterrupt
        return torch.zeros(8, 8)


def test_interrupted_video_leaves_the_old_file(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"the previous run's video")
    with pytest.raises(KeyboardInterrupt):
        figures.write_video(path, [_Failing()], ["V"], steps=[0, 1, 2, 3])
    assert path.read_bytes() == b"the previous run's video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_video_falls_back_to_mp4v_with_a_warning(tmp_path, monkeypatch):
    import sys

    import cv2

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)   # import now fails
    with pytest.warns(UserWarning, match="pip install imageio-ffmpeg"):
        codec = figures.write_video(tmp_path / "v.mp4", [torch.rand(5, 16, 16)], ["V"])
    assert codec == "mp4v"
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_plot_band_is_never_clipped():
    import matplotlib.pyplot as plt

    stats = [{"mean": 0.9, "ci95_low": 0.7, "ci95_high": 1.2},
             {"mean": 0.5, "ci95_low": -0.1, "ci95_high": 0.8},
             {"mean": 0.4, "ci95_low": None, "ci95_high": None}]
    fig, (fixed, auto) = plt.subplots(1, 2)
    fixed.set_ylim(0, 1)                                   # limits set before the band
    figures.plot_band(fixed, [1, 2, 3], stats, "scarred", ylabel="cosine similarity")
    lo, hi = fixed.get_ylim()
    assert lo <= -0.1 and hi >= 1.2 and fixed.get_ylabel() == "cosine similarity"
    figures.plot_band(auto, [1, 2, 3], stats, "scarred")
    lo, hi = auto.get_ylim()
    assert lo <= -0.1 and hi >= 1.2
    plt.close(fig)


def test_plot_matrix_has_labelled_colour_bar_and_n():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    figures.plot_matrix(ax, [[0.9, 0.1], [0.2, 0.8]], ["cue A", "cue B"], ["A", "B"],
                        "recall", n=8, cbar_label="IoU")
    assert ax.get_title() == "recall (n = 8)"
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "IoU"
    plt.close(fig)


def test_save_fields_labels_its_colour_bar(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    figures.save_fields(tmp_path / "f.png", [torch.rand(8, 8), torch.rand(8, 8)], ["F", "K"],
                        vmax=0.08, cbar_label="F and K")
    fig = closed[0]
    assert [a.get_title() for a in fig.axes[:2]] == ["F", "K"]
    assert fig.axes[-1].get_ylabel() == "F and K"
    assert (tmp_path / "f.png").stat().st_size > 0
    monkeypatch.undo()
    plt.close(fig)
