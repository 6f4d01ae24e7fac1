"""Sound as a target pattern: log-mel spectrogram images, a formant vowel synthesiser, and
a loader for recordings named like the Free Spoken Digit Dataset (FSDD).

The image of a sound (`spectrogram_image`), on an H x W grid:

* x (columns) is time, left to right. With `seconds=None` (default) the sound, trimmed
  of its quiet ends (`trim_db`), is stretched over all W columns: column c shows time
  t0 + (c + 0.5) * duration / W, so utterances of different lengths line up start to
  end (a crude time normalisation). With `seconds=s` the grid spans s seconds at a fixed
  rate and the sound sits centred on it (cropped at the centre when longer).
* y (rows) is frequency on the mel scale, low at the bottom: `n_mels` triangular mel
  bands (librosa's Slaney-style filters, fmin..fmax) resampled linearly to H rows, band 0
  (lowest) at row H - 1. `mel_row(f, H)` is the row where a pure tone of f Hz peaks.
* value: power in dB relative to the loudest cell of the sound (or, with band_norm, to
  each band's own loudest frame), kept down to -top_db. The range [-top_db, 0] dB maps
  linearly to [0, PEAK] (PEAK = patterns.PEAK = 0.8, the targets' value inside a shape),
  then `gamma` bends it (level ** gamma). With `mask_db=m` the image is a mask instead:
  PEAK where the level is above -m dB, 0 elsewhere (binary like the geometric targets).

The result is an (H, W) float32 tensor in [0, PEAK] that patterns.check_target accepts,
so any study can store or cue a sound like any other target.

Libraries: soundfile reads WAVs; librosa supplies the mel filter bank and, for
sonification only, Griffin-Lim. The STFT is torch.stft rather than librosa's own
feature pipeline because of start-up: the first spectrogram in a fresh process (torch,
numpy, scipy already imported) took 1.8-2.2 s this way against 7.4-9.2 s with
librosa.feature.melspectrogram (its numba kernels load; 3 interleaved runs each on a
loaded 2-core machine); later calls cost the same (about 9 ms per 0.5 s of audio).
Resampling (only when asked) uses scipy.signal.resample_poly (polyphase FIR, Kaiser).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tnf

from patterns import PEAK

FSDD_SAMPLE_RATE = 8000  # Hz: the Free Spoken Digit Dataset's rate (mono, 16-bit PCM)


class AudioError(ValueError):
    """A sound that cannot be used: unreadable, wrong rate, not mono, empty or silent."""


# ---- spectrogram images ------------------------------------------------------------------

@dataclass(frozen=True)
class SpectrogramEncoding:
    """How a sound becomes an image (module docstring). Sizes are in samples."""
    n_fft: int = 256             # FFT size (32 ms at 8 kHz; 129 frequency bins)
    win_length: int = 256        # Hann window <= n_fft: 256 resolves the harmonics of a
                                 # voice (narrow band), 64 (8 ms) smears them into formants
    hop: int = 64                # 8 ms between frames at 8 kHz
    n_mels: int = 64             # mel bands (>= 2 FFT bins each at n_fft 256, 8 kHz)
    fmin: float = 0.0
    fmax: float | None = None    # None: the Nyquist frequency
    preemphasis: float = 0.0     # y[n] = x[n] - a x[n-1]; 0.97 flattens speech's spectral tilt
    top_db: float = 60.0         # dynamic range kept below the reference -> [0, PEAK]
    gamma: float = 1.0           # contrast: level ** gamma (> 1 darkens the quiet part)
    band_norm: bool = False      # dB relative to each band's loudest frame, not the loudest cell
    mask_db: float | None = None  # binary image: PEAK above -mask_db dB, 0 below
    trim_db: float | None = 40.0  # drop leading/trailing frames whose loudest band is below
                                  # -trim_db (None: keep every frame)
    seconds: float | None = None  # None: stretch the sound over W columns; else the grid's span

    def __post_init__(self):
        def bad(name, value, allowed):
            raise ValueError(f"spectrogram {name}={value} must be {allowed}")
        if self.n_fft < 16:
            bad("n_fft", self.n_fft, ">= 16")
        if not 1 <= self.win_length <= self.n_fft:
            bad("win_length", self.win_length, f"in [1, n_fft={self.n_fft}]")
        if self.hop < 1:
            bad("hop", self.hop, ">= 1")
        if self.n_mels < 2:
            bad("n_mels", self.n_mels, ">= 2")
        if not 0.0 <= self.preemphasis < 1.0:
            bad("preemphasis", self.preemphasis, "in [0, 1)")
        if not self.top_db > 0:
            bad("top_db", self.top_db, "> 0")
        if not self.gamma > 0:
            bad("gamma", self.gamma, "> 0")
        if self.mask_db is not None and not 0 < self.mask_db <= self.top_db:
            bad("mask_db", self.mask_db, f"in (0, top_db={self.top_db}]")
        if self.trim_db is not None and not self.trim_db > 0:
            bad("trim_db", self.trim_db, "> 0 or None")
        if self.seconds is not None and not self.seconds > 0:
            bad("seconds", self.seconds, "> 0 or None")

    def band_edges(self, sample_rate: float) -> tuple[float, float]:
        fmax = sample_rate / 2 if self.fmax is None else float(self.fmax)
        if not 0 <= self.fmin < fmax <= sample_rate / 2:
            raise ValueError(f"mel range fmin={self.fmin} .. fmax={fmax} Hz must satisfy "
                             f"0 <= fmin < fmax <= {sample_rate / 2} (Nyquist)")
        return float(self.fmin), fmax


DEFAULT_ENCODING = SpectrogramEncoding()


def _mel_filters(sample_rate: float, enc: SpectrogramEncoding) -> torch.Tensor:
    import librosa  # the filter bank only (librosa's feature pipeline costs numba start-up)

    fmin, fmax = enc.band_edges(sample_rate)
    return torch.as_tensor(librosa.filters.mel(sr=sample_rate, n_fft=enc.n_fft, n_mels=enc.n_mels,
                                               fmin=fmin, fmax=fmax), dtype=torch.float64)


def log_mel_db(audio, sample_rate: float, enc: SpectrogramEncoding = DEFAULT_ENCODING) -> torch.Tensor:
    """(n_mels, frames) float64 log-mel power in dB, band 0 the lowest, relative to the
    loudest cell (or each band's loudest frame with enc.band_norm), floored at -top_db;
    the quiet ends are trimmed (enc.trim_db). Frames are enc.hop samples apart, centred."""
    x = _as_signal(audio)
    if enc.preemphasis:
        x = torch.cat([x[:1], x[1:] - enc.preemphasis * x[:-1]])
    window = torch.hann_window(enc.win_length, dtype=torch.float64)
    spec = torch.stft(x, enc.n_fft, hop_length=enc.hop, win_length=enc.win_length, window=window,
                      center=True, pad_mode="constant", return_complex=True)
    mel = _mel_filters(sample_rate, enc) @ spec.abs() ** 2
    if not mel.max() > 0:
        raise AudioError("the sound is silent (all samples zero): no spectrogram to draw")
    db = 10.0 * torch.log10(mel.clamp_min(mel.max() * 1e-12))
    db = db - db.max()
    if enc.trim_db is not None:
        loud = torch.nonzero(db.max(0).values > -enc.trim_db).flatten()
        db = db[:, int(loud[0]):int(loud[-1]) + 1]
    if enc.band_norm:
        db = db - db.max(1, keepdim=True).values
    return db.clamp_min(-enc.top_db)


def _as_signal(audio) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(audio), dtype=torch.float64)
    if x.dim() != 1 or x.numel() == 0:
        raise AudioError(f"audio has shape {tuple(x.shape)}; expected a non-empty 1-D signal")
    if not torch.isfinite(x).all():
        raise AudioError("audio holds NaN or Inf samples")
    return x


def _place_in_time(db: torch.Tensor, sample_rate: float, enc: SpectrogramEncoding) -> torch.Tensor:
    """Centre the frames on a canvas of enc.seconds (floor level), cropping the centre."""
    if enc.seconds is None:
        return db
    n = max(1, int(round(enc.seconds * sample_rate / enc.hop)))
    frames = db.shape[1]
    if frames >= n:
        start = (frames - n) // 2
        return db[:, start:start + n]
    canvas = torch.full((db.shape[0], n), -enc.top_db, dtype=db.dtype)
    start = (n - frames) // 2
    canvas[:, start:start + frames] = db
    return canvas


def db_to_image(db: torch.Tensor, height: int, width: int,
                enc: SpectrogramEncoding = DEFAULT_ENCODING) -> torch.Tensor:
    """(n_mels, frames) dB (log_mel_db) -> (H, W) float32 image in [0, PEAK], low
    frequencies at the bottom row (module docstring)."""
    if int(height) != height or int(width) != width or height < 2 or width < 2:
        raise ValueError(f"grid {height}x{width} must be integers >= 2")
    grid = tnf.interpolate(db[None, None], size=(int(height), int(width)), mode="bilinear",
                           align_corners=False, antialias=True)[0, 0].flip(0)
    if enc.mask_db is not None:
        image = PEAK * (grid - grid.max() > -enc.mask_db).to(torch.float64)
    else:
        level = ((grid + enc.top_db) / enc.top_db).clamp(0.0, 1.0)
        # resampling averages the loudest cell down: rescale so that it is PEAK again
        image = PEAK * (level / level.max().clamp_min(1e-12)) ** enc.gamma
    return image.to(torch.float32)


def spectrogram_image(audio, sample_rate: float, height: int, width: int,
                      enc: SpectrogramEncoding = DEFAULT_ENCODING) -> torch.Tensor:
    """A sound as an (H, W) target in [0, PEAK] (module docstring for the mapping)."""
    db = _place_in_time(log_mel_db(audio, sample_rate, enc), sample_rate, enc)
    return db_to_image(db, height, width, enc)


def dot_lattice(image: torch.Tensor, spacing: int = 8, radius: float = 2.0) -> torch.Tensor:
    """Redraw (..., H, W) images as a lattice of separate dots: the grid is cut into
    spacing x spacing blocks (from the top-left corner) and each block becomes a disc of
    `radius` cells at its centre, at the block's mean level; 0 between the discs.

    Why: on the medium a scar lights from any kick and the excitation runs through every
    connected scarred cell, so a contiguous spectrogram's scars (one connected network
    for all stored sounds) all light from any cue. Discs whose gap (spacing - 2 radius)
    is several cells stay separate islands that light only where the cue kicks them.
    spacing and radius are in cells (the medium's length scale), whatever the grid size.
    """
    if int(spacing) != spacing or spacing < 2:
        raise ValueError(f"lattice spacing={spacing} must be an integer >= 2 cells")
    if not 0 < radius <= spacing / 2:
        raise ValueError(f"dot radius={radius} must be in (0, spacing / 2 = {spacing / 2}]")
    spacing = int(spacing)
    H, W = image.shape[-2:]
    x = image.reshape(-1, 1, H, W)
    blocks = tnf.avg_pool2d(x, spacing, spacing, ceil_mode=True)
    level = blocks.repeat_interleave(spacing, -2).repeat_interleave(spacing, -1)[..., :H, :W]
    offset = (torch.arange(max(H, W), dtype=torch.float32) % spacing) - (spacing - 1) / 2
    disc = offset[:H, None] ** 2 + offset[None, :W] ** 2 <= radius ** 2
    return (level * disc.to(level.dtype)).reshape(image.shape)


def mel_row(freq_hz: float, height: int, sample_rate: float = FSDD_SAMPLE_RATE,
            enc: SpectrogramEncoding = DEFAULT_ENCODING) -> float:
    """The (fractional) row where a pure tone of freq_hz peaks: band centres are evenly
    spaced in mel, and row r of H samples band (r + 0.5) n_mels / H - 0.5, counted up
    from the bottom row."""
    import librosa

    fmin, fmax = enc.band_edges(sample_rate)
    lo, hi = librosa.hz_to_mel(fmin), librosa.hz_to_mel(fmax)
    band = (librosa.hz_to_mel(freq_hz) - lo) / (hi - lo) * (enc.n_mels + 1) - 1.0
    from_bottom = (band + 0.5) * height / enc.n_mels - 0.5
    return float(height - 1 - from_bottom)


def image_to_audio(image: torch.Tensor, sample_rate: float, frames: int,
                   enc: SpectrogramEncoding = DEFAULT_ENCODING, n_iter: int = 32,
                   seed: int = 0) -> np.ndarray:
    """Sonify an (H, W) image (e.g. a recalled V) made with enc: undo the level mapping,
    resample to (n_mels, frames), invert the mel bank (NNLS) and estimate the phase with
    Griffin-Lim (librosa). Loudness is relative (the image knows no absolute level)."""
    import librosa

    level = (torch.as_tensor(image, dtype=torch.float64) / PEAK).clamp(0, 1) ** (1.0 / enc.gamma)
    db = tnf.interpolate(level.flip(0)[None, None], size=(enc.n_mels, int(frames)),
                         mode="bilinear", align_corners=False)[0, 0] * enc.top_db - enc.top_db
    power = (10.0 ** (db / 10.0)).numpy()
    fmin, fmax = enc.band_edges(sample_rate)
    magnitude = librosa.feature.inverse.mel_to_stft(power, sr=sample_rate, n_fft=enc.n_fft,
                                                    power=2.0, fmin=fmin, fmax=fmax)
    audio = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=enc.hop,
                               win_length=enc.win_length, n_fft=enc.n_fft,
                               random_state=np.random.default_rng(seed))
    return audio.astype(np.float32)


# ---- the formant vowel synthesiser ---------------------------------------------------------

# Average formant frequencies F1, F2, F3 (Hz) of adult men: Peterson, G. E. & Barney, H. L.
# (1952), "Control methods used in a study of the vowels", J. Acoust. Soc. Am. 24, 175-184,
# Table II. Their vowel set has no monophthong /e/ or /o/; as in Watrous (1991), their
# /ɛ/ ("head") stands for /e/ and /ɔ/ ("hawed") for /o/.
VOWEL_FORMANTS = {
    "a": (730.0, 1090.0, 2440.0),   # /ɑ/ "hod"
    "e": (530.0, 1840.0, 2480.0),   # /ɛ/ "head"
    "i": (270.0, 2290.0, 3010.0),   # /i/ "heed"
    "o": (570.0, 840.0, 2410.0),    # /ɔ/ "hawed"
    "u": (300.0, 870.0, 2240.0),    # /u/ "who'd"
}
# Formant bandwidths (Hz): a choice of the order measured for men's vowels; the task
# depends on the centre frequencies above.
FORMANT_BANDWIDTHS = (60.0, 90.0, 150.0)
VOWEL_F0 = 130.0          # Hz, near the men's average fundamental in Peterson & Barney
GLOTTAL_BANDWIDTH = 100.0  # Hz: the glottal low-pass (a resonator at 0 Hz, -12 dB/octave)
RAMP_SECONDS = 0.02       # raised-cosine onset and offset (no clicks)


def resonator(x: np.ndarray, freq: float, bandwidth: float, sample_rate: float) -> np.ndarray:
    """Klatt's (1980) digital resonator, unit gain at 0 Hz:
    y[n] = A x[n] + B y[n-1] + C y[n-2], C = -exp(-2 pi bw T), B = 2 exp(-pi bw T)
    cos(2 pi f T), A = 1 - B - C (T = 1 / sample_rate)."""
    from scipy.signal import lfilter

    T = 1.0 / sample_rate
    C = -math.exp(-2 * math.pi * bandwidth * T)
    B = 2 * math.exp(-math.pi * bandwidth * T) * math.cos(2 * math.pi * freq * T)
    return lfilter([1.0 - B - C], [1.0, -B, -C], x)


def glottal_source(n: int, sample_rate: float, f0: float, jitter: float, shimmer: float,
                   rng: np.random.Generator) -> np.ndarray:
    """A pulse train at f0: each period scaled by (1 + jitter * N(0, 1)) and each pulse's
    amplitude by (1 + shimmer * N(0, 1)), through the glottal low-pass."""
    count = int(math.ceil(n / sample_rate * f0 * 1.5)) + 2
    periods = (1.0 / f0) * np.clip(1.0 + jitter * rng.standard_normal(count), 0.5, 1.5)
    at = np.round(np.cumsum(periods) * sample_rate).astype(np.int64)
    amplitude = np.clip(1.0 + shimmer * rng.standard_normal(count), 0.0, None)
    keep = at < n
    pulses = np.zeros(n)
    pulses[at[keep]] = amplitude[keep]
    return resonator(pulses, 0.0, GLOTTAL_BANDWIDTH, sample_rate)


def synthesize_vowel(vowel, seed: int = 0, sample_rate: float = FSDD_SAMPLE_RATE,
                     seconds: float = 0.5, f0: float = VOWEL_F0, jitter: float = 0.01,
                     shimmer: float = 0.05, breath: float = 0.05,
                     bandwidths=FORMANT_BANDWIDTHS) -> np.ndarray:
    """A steady vowel: glottal source (pulse train at f0 with jitter and shimmer, plus
    breath noise of RMS `breath` times the voiced source's) through cascaded formant
    resonators, then lip radiation (a first difference, +6 dB/octave), raised-cosine
    ramps, peak 0.9. vowel: a key of VOWEL_FORMANTS or a tuple of formant frequencies
    (Hz). The noise (jitter, shimmer, breath) is drawn from `seed`. Returns float32."""
    formants = VOWEL_FORMANTS[vowel] if isinstance(vowel, str) and vowel in VOWEL_FORMANTS \
        else vowel
    if isinstance(formants, str) or not formants:
        raise ValueError(f"vowel {vowel!r} is not one of {sorted(VOWEL_FORMANTS)} or a tuple "
                         f"of formant frequencies")
    formants = tuple(float(f) for f in formants)
    if len(bandwidths) < len(formants):
        raise ValueError(f"{len(formants)} formants need as many bandwidths, got {bandwidths}")
    if not all(0 < f < sample_rate / 2 for f in formants):
        raise ValueError(f"formants {formants} Hz must lie in (0, {sample_rate / 2}) (Nyquist)")
    if not 0 < f0 < sample_rate / 4:
        raise ValueError(f"f0={f0} Hz must be in (0, {sample_rate / 4})")
    for name, value in (("jitter", jitter), ("shimmer", shimmer), ("breath", breath)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value} must be in [0, 1]")
    n = int(round(seconds * sample_rate))
    if n < 2 * int(RAMP_SECONDS * sample_rate) + 1:
        raise ValueError(f"seconds={seconds} is too short (minimum {2 * RAMP_SECONDS + 0.001})")
    rng = np.random.default_rng(seed)
    x = glottal_source(n, sample_rate, f0, jitter, shimmer, rng)
    x = x + breath * x.std() * rng.standard_normal(n)
    for f, bw in zip(formants, bandwidths):
        x = resonator(x, f, bw, sample_rate)
    x = np.diff(x, prepend=0.0)
    ramp = int(RAMP_SECONDS * sample_rate)
    envelope = np.ones(n)
    envelope[:ramp] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[n - ramp:] = envelope[:ramp][::-1]
    x = x * envelope
    return (0.9 * x / np.abs(x).max()).astype(np.float32)


def vowel_image(vowel, height: int, width: int, seed: int = 0,
                enc: SpectrogramEncoding = DEFAULT_ENCODING, **synth) -> torch.Tensor:
    """A synthetic vowel (synthesize_vowel, at FSDD's 8 kHz) as an (H, W) target."""
    audio = synthesize_vowel(vowel, seed=seed, **synth)
    return spectrogram_image(audio, synth.get("sample_rate", FSDD_SAMPLE_RATE), height, width, enc)


# ---- the published vowel task's own encoding (for its reproduction) ----------------------

# The published task's formants (F1, F2; rounded Peterson & Barney values) and encoding:
# two sines F1 + 0.5 F2 under a Hann envelope, 0.5 s at 22.05 kHz, scipy STFT (512-sample
# Hann, hop 256), 20 log10(|Z| + 1e-10) dB, bilinear resize, min-max scaled to [0, 1].
# Rows run from 0 Hz at the top row, linear in frequency (kept as published).
PUBLISHED_FORMANTS = {"a": (700.0, 1200.0), "i": (300.0, 2300.0), "u": (300.0, 900.0)}
PUBLISHED_RATE, PUBLISHED_SECONDS, PUBLISHED_NFFT, PUBLISHED_HOP = 22050, 0.5, 512, 256


def published_vowel_audio(vowel: str) -> np.ndarray:
    if vowel not in PUBLISHED_FORMANTS:
        raise ValueError(f"published vowel {vowel!r} is not one of {sorted(PUBLISHED_FORMANTS)}")
    f1, f2 = PUBLISHED_FORMANTS[vowel]
    t = np.arange(int(PUBLISHED_RATE * PUBLISHED_SECONDS)) / PUBLISHED_RATE
    x = (np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * f2 * t)) * np.hanning(t.size)
    return x / np.abs(x).max()


def published_vowel_image(vowel: str, height: int = 256, width: int = 256,
                          peak: float = 1.0) -> torch.Tensor:
    """The published task's target for `vowel` (see PUBLISHED_FORMANTS), in [0, peak]
    (the published images span [0, 1]; pass peak=PEAK for the project's scale)."""
    from scipy.signal import stft

    _, _, Z = stft(published_vowel_audio(vowel), fs=PUBLISHED_RATE, nperseg=PUBLISHED_NFFT,
                   noverlap=PUBLISHED_NFFT - PUBLISHED_HOP)
    db = torch.as_tensor(20.0 * np.log10(np.abs(Z) + 1e-10), dtype=torch.float32)
    img = tnf.interpolate(db[None, None], size=(int(height), int(width)), mode="bilinear",
                          align_corners=False)[0, 0]
    return (img - img.min()) / (img.max() - img.min() + 1e-8) * peak


# The waveform of the published experiments 1A-rev1 and 1A-rev2 (audio injected into the
# medium directly): a 120 Hz carrier times 0.6 sin(F1) + 0.4 sin(F2), 50 ms linear attack
# and release, peak-normalised; their rate was 44.1 kHz.
PUBLISHED_CARRIER_HZ, PUBLISHED_RAMP_S = 120.0, 0.05


def published_phoneme_audio(vowel: str, seconds: float = 0.5,
                            sample_rate: float = 44100.0) -> np.ndarray:
    if vowel not in PUBLISHED_FORMANTS:
        raise ValueError(f"published vowel {vowel!r} is not one of {sorted(PUBLISHED_FORMANTS)}")
    f1, f2 = PUBLISHED_FORMANTS[vowel]
    t = np.linspace(0.0, seconds, int(sample_rate * seconds))
    x = np.sin(2 * np.pi * PUBLISHED_CARRIER_HZ * t) * (0.6 * np.sin(2 * np.pi * f1 * t)
                                                        + 0.4 * np.sin(2 * np.pi * f2 * t))
    ramp = min(int(PUBLISHED_RAMP_S * sample_rate), t.size // 2)
    env = np.ones_like(t)
    if ramp:
        env[:ramp] = np.linspace(0.0, 1.0, ramp)
        env[-ramp:] = np.linspace(1.0, 0.0, ramp)
    x = x * env
    return x / np.abs(x).max()


# ---- recordings named like FSDD: {digit}_{speaker}_{index}.wav -------------------------------

FSDD_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z0-9]+)_(?P<index>[0-9]+)\.wav$")


@dataclass(frozen=True)
class Recording:
    digit: int
    speaker: str
    index: int
    path: Path


def find_recordings(folder, digits=None, speakers=None, indices=None) -> list[Recording]:
    """Every `{digit}_{speaker}_{index}.wav` in folder (not its subfolders) that passes
    the filters (None: any), sorted by (speaker, digit, index). Raises FileNotFoundError
    for a missing folder and AudioError when nothing matches."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder}")
    found = []
    for path in folder.iterdir():
        m = FSDD_NAME.match(path.name)
        if not m or not path.is_file():
            continue
        rec = Recording(int(m["digit"]), m["speaker"], int(m["index"]), path)
        if ((digits is None or rec.digit in digits) and (speakers is None or rec.speaker in speakers)
                and (indices is None or rec.index in indices)):
            found.append(rec)
    if not found:
        wanted = ", ".join(f"{k} {sorted(v) if not isinstance(v, str) else v}" for k, v in
                           (("digits", digits), ("speakers", speakers), ("indices", indices))
                           if v is not None)
        raise AudioError(f"no WAV files named {{digit}}_{{speaker}}_{{index}}.wav in {folder}"
                         + (f" with {wanted}" if wanted else ""))
    return sorted(found, key=lambda r: (r.speaker, r.digit, r.index))


def read_wav(path, sample_rate: int = FSDD_SAMPLE_RATE, resample: bool = False) -> np.ndarray:
    """A mono WAV as float32 samples in [-1, 1] at `sample_rate`. A file at another rate
    is an error unless resample=True (then: scipy.signal.resample_poly, polyphase FIR with
    a Kaiser window). Raises FileNotFoundError or AudioError (unreadable, not mono,
    empty, silent) with one line naming the file."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot read {path} as a WAV file ({exc})") from None
    if audio.shape[1] != 1:
        raise AudioError(f"{path} has {audio.shape[1]} channels; expected mono (1)")
    audio = audio[:, 0]
    if audio.size == 0:
        raise AudioError(f"{path} holds no samples (empty audio)")
    if rate != sample_rate:
        if not resample:
            raise AudioError(f"{path} is sampled at {rate} Hz; expected {sample_rate} Hz "
                             f"(resample=True converts it)")
        from scipy.signal import resample_poly

        ratio = Fraction(int(sample_rate), int(rate))
        audio = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
    if not np.any(audio):
        raise AudioError(f"{path} is silent (every sample is zero)")
    return audio


def load_recordings(recordings, sample_rate: int = FSDD_SAMPLE_RATE,
                    resample: bool = False) -> list[np.ndarray]:
    """read_wav for each Recording, all read (and so checked) before any is used."""
    return [read_wav(r.path, sample_rate, resample) for r in recordings]


def recording_images(recordings, height: int, width: int,
                     enc: SpectrogramEncoding = DEFAULT_ENCODING, sample_rate: int = FSDD_SAMPLE_RATE,
                     resample: bool = False) -> torch.Tensor:
    """(N, H, W) spectrogram images of the recordings, in their order."""
    audio = load_recordings(recordings, sample_rate, resample)
    return torch.stack([spectrogram_image(a, sample_rate, height, width, enc) for a in audio])


@dataclass
class DigitData:
    """A spoken-digit task: one speaker's chosen recordings make the templates (one per
    digit, their images averaged); that speaker's other recordings of the same digits
    (held out) and every other speaker's are the cues. sounds: Recording -> samples."""
    folder: Path
    templates: list          # Recording lists
    held_out: list
    others: list
    sounds: dict
    digits: list


def split_digits(recordings, speaker: str, template_indices) -> tuple[list, list, list, list]:
    """(templates, held out, others, digits) of the recordings: the speaker's recordings
    whose index is in template_indices, the speaker's other recordings of those digits,
    every other speaker's recordings of them, and the sorted digits."""
    templates = [r for r in recordings if r.speaker == speaker and r.index in template_indices]
    digits = sorted({r.digit for r in templates})
    held = [r for r in recordings if r.speaker == speaker and r.digit in digits
            and r.index not in template_indices]
    others = [r for r in recordings if r.speaker != speaker and r.digit in digits]
    return templates, held, others, digits


def digit_task_images(data: DigitData, height: int, width: int,
                      enc: SpectrogramEncoding = DEFAULT_ENCODING,
                      sample_rate: int = FSDD_SAMPLE_RATE):
    """Templates (P, H, W: the mean image of each digit's template recordings), cue
    images (C, H, W: held out, then the other speakers), labels (C,: index into
    data.digits) and the groups {"held_out", "other_speakers": slice of the cues} that
    have any cue."""
    def images(recs):
        if not recs:
            return torch.zeros(0, height, width)
        return torch.stack([spectrogram_image(data.sounds[r], sample_rate, height, width, enc)
                            for r in recs])

    t_ims = images(data.templates)
    t_dig = torch.tensor([r.digit for r in data.templates])
    templates = torch.stack([t_ims[t_dig == d].mean(0) for d in data.digits])
    cues = torch.cat([images(data.held_out), images(data.others)])
    labels = torch.tensor([data.digits.index(r.digit) for r in data.held_out + data.others])
    nh = len(data.held_out)
    groups = {k: v for k, v in (("held_out", slice(0, nh)),
                                ("other_speakers", slice(nh, nh + len(data.others))))
              if v.stop > v.start}
    return templates, cues, labels, groups
