"""inputs.audio: the spectrogram mapping, the vowel synthesiser, the FSDD loader."""
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from inputs import audio
from patterns import PEAK, check_target

SR = audio.FSDD_SAMPLE_RATE
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "fsdd"


def slaney_mel(f):
    """The Slaney (Auditory Toolbox) mel scale, written out independently of librosa:
    linear below 1 kHz (3 mel per 200 Hz), logarithmic above (27 mel per factor 6.4)."""
    f = np.asarray(f, dtype=float)
    return np.where(f < 1000, f * 3 / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))


def tone(freq, seconds=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("freq", [250.0, 700.0, 1500.0, 3000.0])
def test_pure_tone_lands_on_its_mel_row(freq):
    H, W = 96, 40
    enc = audio.SpectrogramEncoding()
    img = audio.spectrogram_image(tone(freq), SR, H, W, enc)
    # expected row from the independent mel formula: band centres evenly spaced in mel
    # between 0 Hz and Nyquist (n_mels + 2 points), bands stretched over H rows, band 0
    # (lowest) at the bottom row
    band = slaney_mel(freq) / slaney_mel(SR / 2) * (enc.n_mels + 1) - 1
    expected = H - 1 - ((band + 0.5) * H / enc.n_mels - 0.5)
    profile = img[:, 5:-5].mean(1)
    assert abs(int(profile.argmax()) - expected) <= 1.0
    assert audio.mel_row(freq, H, SR, enc) == pytest.approx(float(expected), abs=1e-6)
    # a tone is one narrow bright band: rows 10 or more away from its row stay dark
    far = (torch.arange(H) - expected).abs() >= 10
    assert profile[far].max() < 0.5 * profile.max()


def test_low_tones_sit_below_high_tones():
    rows = [int(audio.spectrogram_image(tone(f), SR, 64, 32).mean(1).argmax())
            for f in (200.0, 800.0, 2000.0)]
    assert rows[0] > rows[1] > rows[2]


def test_time_runs_left_to_right():
    # 0.5 s of silence then 0.5 s of tone on a grid spanning exactly 1 s (no trimming):
    # only the right half of the columns is lit
    signal = np.concatenate([np.zeros(SR // 2), tone(1000.0)])
    enc = audio.SpectrogramEncoding(trim_db=None, seconds=1.0)
    img = audio.spectrogram_image(signal, SR, 32, 64, enc)
    cols = img.max(0).values
    assert cols[:28].max() < 1e-3 * PEAK and cols[36:].min() > 0.7 * PEAK
    # stretched mode trims the silence: the tone fills every column
    stretched = audio.spectrogram_image(signal, SR, 32, 64).max(0).values
    assert stretched[2:].min() > 0.7 * PEAK


def test_dynamic_range_and_mask_mapping():
    # a loud tone and a tone 30 dB quieter: graded level 1 - 30/60 = 0.5 of PEAK
    signal = tone(500.0) + 10 ** (-30 / 20) * tone(2500.0)
    H = 64
    img = audio.spectrogram_image(signal, SR, H, 32)
    loud, quiet = img[:, 16].max(), img[int(round(audio.mel_row(2500.0, H))), 16]
    assert float(loud) == pytest.approx(PEAK, abs=1e-4)
    assert float(quiet) == pytest.approx(0.5 * PEAK, abs=0.1 * PEAK)
    mask = audio.spectrogram_image(signal, SR, H, 32, audio.SpectrogramEncoding(mask_db=20))
    assert torch.equal(mask.unique(), torch.tensor([0.0, PEAK]))
    assert mask[int(round(audio.mel_row(500.0, H))), 16] == pytest.approx(PEAK)
    assert mask[int(round(audio.mel_row(2500.0, H))), 16] == 0      # 30 dB down: outside


def test_images_pass_check_target():
    for img in (audio.spectrogram_image(tone(440.0), SR, 48, 80),
                audio.vowel_image("a", 48, 80, seed=3),
                audio.published_vowel_image("u", 48, 80, peak=PEAK)):
        check_target(img, 48, 80)
        assert img.dtype == torch.float32
        assert float(img.min()) >= 0 and float(img.max()) <= PEAK + 1e-6


def test_encoding_rejects_bad_values():
    with pytest.raises(ValueError, match="win_length"):
        audio.SpectrogramEncoding(n_fft=128, win_length=256)
    with pytest.raises(ValueError, match="mask_db"):
        audio.SpectrogramEncoding(mask_db=90)
    with pytest.raises(audio.AudioError, match="silent"):
        audio.spectrogram_image(np.zeros(4000), SR, 32, 32)


def harmonic_peaks(x, f0):
    """Frequencies of the harmonics k f0 whose amplitude is a local maximum over k."""
    seg = x[len(x) // 4: 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    freqs = np.fft.rfftfreq(seg.size, 1 / SR)
    ks = np.arange(1, int((SR / 2 - f0) / f0))
    amp = np.array([spectrum[np.abs(freqs - k * f0) < f0 / 4].max() for k in ks])
    return [ks[i] * f0 for i in range(1, len(ks) - 1) if amp[i] > amp[i - 1] and amp[i] >= amp[i + 1]]


@pytest.mark.parametrize("vowel", sorted(audio.VOWEL_FORMANTS))
def test_synthesiser_puts_formant_peaks_where_the_table_says(vowel):
    f0 = 100.0
    x = audio.synthesize_vowel(vowel, f0=f0, jitter=0, shimmer=0, breath=0, seconds=1.0)
    peaks = harmonic_peaks(x, f0)
    for formant in audio.VOWEL_FORMANTS[vowel]:  # F1, F2, F3 each at its nearest harmonic
        assert min(abs(p - formant) for p in peaks) <= f0 / 2 + 1e-9, (formant, peaks)
    assert len(peaks) == 3   # and no spurious peak


def test_synthesiser_noise_is_seeded():
    a, b, c = (audio.synthesize_vowel("i", seed=s) for s in (1, 1, 2))
    assert a.dtype == np.float32 and np.abs(a).max() == pytest.approx(0.9, abs=1e-6)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    with pytest.raises(ValueError, match="vowel"):
        audio.synthesize_vowel("y")


def test_published_encoding_puts_formant_lines_from_the_top():
    img = audio.published_vowel_image("a")
    assert img.shape == (256, 256) and float(img.min()) == 0 and float(img.max()) == pytest.approx(1.0)
    profile = img.mean(1)
    hz_per_row = audio.PUBLISHED_RATE / 2 / 256
    top2 = sorted(int(r) for r in profile.topk(12).indices)
    assert any(abs(r - 700 / hz_per_row) <= 2 for r in top2)
    assert any(abs(r - 1200 / hz_per_row) <= 2 for r in top2)


# ---- the loader -----------------------------------------------------------------------

def write(path, data, rate=SR):
    soundfile.write(str(path), data, rate, subtype="PCM_16")
    return path


def test_loader_finds_and_filters_fsdd_names(tmp_path):
    for name in ("3_ann_0.wav", "3_ann_1.wav", "7_bob_0.wav", "notes.txt", "x_ann_0.wav"):
        write(tmp_path / name, 0.1 * tone(300.0, 0.1)) if name.endswith(".wav") else \
            (tmp_path / name).write_text("-")
    recs = audio.find_recordings(tmp_path)
    assert [(r.digit, r.speaker, r.index) for r in recs] == [(3, "ann", 0), (3, "ann", 1), (7, "bob", 0)]
    assert [r.index for r in audio.find_recordings(tmp_path, speakers=["ann"], indices=[1])] == [1]
    with pytest.raises(audio.AudioError, match="no WAV files named"):
        audio.find_recordings(tmp_path, digits=[5])


def test_loader_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        audio.find_recordings(tmp_path / "nowhere")


def test_loader_bad_wav(tmp_path):
    bad = tmp_path / "1_ann_0.wav"
    bad.write_bytes(b"RIFF\x00\x00 this is not a wave file")
    with pytest.raises(audio.AudioError, match="cannot read .*1_ann_0.wav as a WAV"):
        audio.read_wav(bad)


def test_loader_wrong_rate_is_an_error_unless_resampled(tmp_path):
    path = write(tmp_path / "1_ann_0.wav", 0.5 * tone(440.0, 0.25)[: SR // 4].repeat(2), rate=16000)
    with pytest.raises(audio.AudioError, match="16000 Hz; expected 8000 Hz"):
        audio.read_wav(path)
    x = audio.read_wav(path, resample=True)
    assert x.shape == (SR // 4,) and x.dtype == np.float32


def test_loader_rejects_stereo_empty_and_silent(tmp_path):
    stereo = write(tmp_path / "1_ann_0.wav", np.stack([tone(440.0, 0.1)] * 2, 1) * 0.5)
    with pytest.raises(audio.AudioError, match="2 channels; expected mono"):
        audio.read_wav(stereo)
    empty = write(tmp_path / "1_ann_1.wav", np.zeros(0))
    with pytest.raises(audio.AudioError, match="empty"):
        audio.read_wav(empty)
    silent = write(tmp_path / "1_ann_2.wav", np.zeros(800))
    with pytest.raises(audio.AudioError, match="silent"):
        audio.read_wav(silent)
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        audio.read_wav(tmp_path / "2_ann_0.wav")


def test_shipped_recordings_are_complete_and_readable():
    recs = audio.find_recordings(ASSETS)
    by_speaker = {}
    for r in recs:
        by_speaker.setdefault(r.speaker, set()).add((r.digit, r.index))
    assert by_speaker.pop("jackson") == {(d, i) for d in range(10) for i in range(10)}
    assert sorted(by_speaker) == ["george", "lucas", "nicolas", "theo", "yweweler"]
    assert all(v == {(d, i) for d in range(10) for i in (0, 1)} for v in by_speaker.values())
    notice = (ASSETS / "NOTICE").read_text()
    assert "CC BY-SA 4.0" in notice and "Jakobovski/free-spoken-digit-dataset" in notice
    images = audio.recording_images(recs[:3], 32, 32)
    assert images.shape == (3, 32, 32) and math.isclose(float(images.amax()), PEAK, rel_tol=1e-5)


def test_dot_lattice_draws_separate_discs_at_block_means():
    img = torch.zeros(2, 16, 24)
    img[0, :8, :8] = PEAK            # one full block
    img[1, 8:, 16:] = PEAK / 2       # another block at half level
    img[1, 0, 0] = PEAK              # one cell of 64: block mean PEAK / 64
    dots = audio.dot_lattice(img, spacing=8, radius=2.0)
    assert dots.shape == img.shape
    centre = (3.5, 3.5)              # disc centre inside each 8 x 8 block
    ys, xs = torch.nonzero(dots[0] > 0, as_tuple=True)
    assert ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2).max() <= 4.0
    assert int((dots[0] > 0).sum()) == 12 and dots[0].max() == pytest.approx(PEAK)
    assert torch.allclose(dots[1, 11:13, 19:21], torch.tensor(PEAK / 2)) and dots[1, 3, 3] == pytest.approx(PEAK / 64)
    with pytest.raises(ValueError, match="radius"):
        audio.dot_lattice(img, spacing=4, radius=3)
