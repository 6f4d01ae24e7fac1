"""The saved state file (common/state.py) and GrayScott.save / GrayScott.load."""
import json

import numpy as np
import pytest
import torch

from common import state as st
from substrate import GrayScott


def _medium(batch=2, n=12, steps=20):
    gs = GrayScott(n, n, batch=batch, compile=False, decay=0.999, Du=0.15)
    V = torch.zeros(batch, n, n)
    V[:, 4:8, 4:8] = 0.5
    gs.reset(V=V)
    gs.F = torch.full((batch, n, n), 0.04)
    gs.K = torch.full((n, n), 0.06)
    gs.run(steps)
    return gs


def _arrays(n=6, B=2):
    return dict(U=np.ones((B, n, n), np.float32), V=np.zeros((B, n, n), np.float32),
                F=np.full((n, n), 0.037, np.float32), K=np.full((n, n), 0.06, np.float32))


def test_a_saved_medium_reloads_whole_and_continues_to_the_same_numbers(tmp_path):
    gs = _medium()
    path = gs.save(tmp_path / "s.npz", seeds=[3, 4], rule={"rule": "none"},
                   protocol={"grid": 12}, extra={"cue": torch.full((2, 12, 12), 0.1)})
    back = GrayScott.load(path, compile=False)
    for name in "UVFK":
        assert torch.equal(getattr(back, name), getattr(gs, name)), name
    assert back.steps_taken == 20 and back.saved["seeds"] == [3, 4]
    assert (back.Du, back.decay, back.stencil) == (0.15, 0.999, "nine_point")
    assert back.saved["protocol"] == {"grid": 12} and back.saved["rule"] == {"rule": "none"}
    assert torch.equal(back.saved["extra"]["cue"], torch.full((2, 12, 12), 0.1))
    gs.run(15)
    back.run(15)
    assert torch.equal(back.V, gs.V) and back.steps_taken == 35


def test_the_file_is_plain_npz_with_json_metadata_and_no_pickles(tmp_path):
    path = _medium().save(tmp_path / "s.npz")
    with np.load(path, allow_pickle=False) as z:          # raises on any object array
        assert set(z.files) == {"U", "V", "F", "K", "metadata"}
        meta = json.loads(str(z["metadata"][()]))
    assert meta["format"] == st.FORMAT and meta["format_version"] == st.FORMAT_VERSION
    assert meta["package_version"] == "0.1.0" or meta["package_version"]
    assert meta["git_commit"] == "not a git checkout" or len(meta["git_commit"]) >= 40
    assert meta["step"] == 20 and meta["substrate"]["Du"] == 0.15


def _write(path, arrays, meta=None, **extra_keys):
    meta = meta if meta is not None else {
        "format": st.FORMAT, "format_version": 1, "package_version": "x", "git_commit": "y",
        "step": 0, "seeds": [0, 1], "rule": None, "protocol": {}, "substrate": None,
        "extra": []}
    np.savez(path, **arrays, metadata=np.array(json.dumps(meta)), **extra_keys)
    return path


@pytest.mark.parametrize("change, needle", [
    (lambda a, m: a.pop("K"), "keys ['K'] missing"),
    (lambda a, m: a["V"].__setitem__((0, 0, 0), np.nan), "V has NaN or Inf"),
    (lambda a, m: a.__setitem__("F", np.full((6, 6), 1.5, np.float32)), "F spans [1.5, 1.5]"),
    (lambda a, m: a.__setitem__("V", np.zeros((2, 5, 6), np.float32)), "must have one shape"),
    (lambda a, m: a.__setitem__("K", np.zeros((3, 6, 6), np.float32)), "K has shape (3, 6, 6)"),
    (lambda a, m: a.__setitem__("U", a["U"].astype(np.float16)), "dtypes"),
    (lambda a, m: m.__setitem__("format_version", 99), "newer than this code reads"),
    (lambda a, m: m.__setitem__("format", "other"), "not a parametric-scarring-state file"),
    (lambda a, m: m.__setitem__("step", -1), "step -1"),
    (lambda a, m: m.__setitem__("seeds", ["a"]), "seeds ['a']"),
    (lambda a, m: m.__setitem__("extra", ["cue"]), "extra arrays [] do not match"),
])
def test_each_bad_file_is_refused_in_one_line_naming_it(tmp_path, change, needle):
    arrays = _arrays()
    meta = {"format": st.FORMAT, "format_version": 1, "package_version": "x",
            "git_commit": "y", "step": 0, "seeds": [0, 1], "rule": None, "protocol": {},
            "substrate": None, "extra": []}
    change(arrays, meta)
    path = _write(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(ValueError) as info:
        st.load_state(path)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and str(path) in msg


def test_pickled_arrays_and_non_npz_files_are_refused(tmp_path):
    path = _write(tmp_path / "p.npz", _arrays(),
                  **{"extra.evil": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="holds pickled"):
        st.load_state(path)
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        st.load_state(tmp_path / "t.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        st.load_state(tmp_path / "none.npz")


def test_save_refuses_what_load_would_refuse(tmp_path):
    a = _arrays()
    a["V"][0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="V has NaN or Inf"):
        st.save_state(tmp_path / "x.npz", **a, step=0, seeds=[0, 1])
    assert not list(tmp_path.iterdir())          # nothing half-written


def test_check_fits_names_grid_and_batch():
    s = {"U": torch.ones(2, 6, 6)}
    st.check_fits(s, grid=6, batch=2)
    with pytest.raises(ValueError, match="grid is 6x6 but this run's is 8x8"):
        st.check_fits(s, grid=8)
    with pytest.raises(ValueError, match="holds 2 batch members but this run has 3"):
        st.check_fits(s, grid=6, batch=3)
