"""The input protocol: odd images, odd audio, video, text tables; clear errors for bad files."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile
from PIL import Image

from cmcr.errors import InputError, MissingDependencyError
from cmcr.data.processing import load_audio, load_image, read_texts, to_rgb


# -- images --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,suffix", [("CMYK", ".jpg"), ("L", ".png"), ("P", ".png"),
                                         ("RGB", ".webp"), ("RGBA", ".png"), ("I;16", ".png"),
                                         ("LA", ".png")])
def test_any_image_mode_loads_as_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"odd{suffix}"
    Image.new(mode, (7, 5)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (7, 5)


def test_one_pixel_image_loads(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    assert load_image(path).getpixel((0, 0)) == (10, 20, 30)


def test_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (2, 2), (255, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_image_is_scaled_not_clipped():
    image = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_truncated_jpeg_is_an_error_naming_the_path(tmp_path, assets_dir):
    path = tmp_path / "cut.jpeg"
    path.write_bytes((assets_dir / "BBQ.jpeg").read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.jpeg.*cannot decode image"):
        load_image(path)


def test_corrupt_and_missing_images_are_errors(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="noise.png"):
        load_image(path)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "absent.jpg")


def test_reference_jpeg_decodes_full_size(assets_dir):
    assert load_image(assets_dir / "train.jpeg").size == (1920, 1080)


# -- audio ---------------------------------------------------------------------------------------
def test_stereo_8khz_is_averaged_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    left = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.5
    soundfile.write(path, np.stack([left, -left], axis=1), 8000)  # channels cancel
    samples = load_audio(path, 16000)
    assert samples.dtype == np.float32 and samples.shape == (16000,)
    assert np.abs(samples).max() < 1e-4


@pytest.mark.parametrize("fmt,suffix", [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg")])
def test_short_silent_clips_load_in_any_container(tmp_path, fmt, suffix):
    path = tmp_path / f"short{suffix}"
    soundfile.write(path, np.zeros(4410, dtype=np.float32), 44100, format=fmt)  # 0.1 s
    samples = load_audio(path, 48000)
    assert abs(len(samples) - 4800) <= 2 and not samples.any()


def test_reference_wav_resamples_to_model_rate(assets_dir):
    assert load_audio(assets_dir / "BBQ.wav", 48000).shape == (480000,)  # 10 s at 32 kHz


def test_corrupt_truncated_and_empty_audio(tmp_path, assets_dir):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(InputError, match="corrupt.wav.*cannot decode audio"):
        load_audio(corrupt, 16000)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(InputError, match="no samples"):
        load_audio(empty, 16000)
    truncated = tmp_path / "truncated.wav"  # header promises 10 s, 1 KiB remains
    truncated.write_bytes((assets_dir / "BBQ.wav").read_bytes()[:1024])
    try:
        samples = load_audio(truncated, 16000)
    except InputError as err:
        assert "truncated.wav" in str(err)
    else:
        assert 0 < len(samples) < 16000


# -- video ---------------------------------------------------------------------------------------
def _write_video(path, seconds=2, rate=10, audio_rate=16000):
    pytest.importorskip("av", reason="PyAV not installed (pip install av)")
    from eval_fixtures import write_video

    return write_video(path, seconds, rate, audio_rate, channels=2)


def test_video_frame_at_a_chosen_time_and_audio_track(tmp_path):
    path = _write_video(tmp_path / "clip.mp4")
    first = np.asarray(load_image(path.with_name("clip.mp4"), frame_time=0.0)).mean()
    middle = np.asarray(load_image(path)).mean()  # default: the middle of the clip
    last = np.asarray(load_image(path, frame_time=1.95)).mean()
    assert first < middle < last and 100 < middle < 160
    samples = load_audio(path, 8000)
    assert abs(len(samples) - 16000) < 2000 and np.abs(samples).max() > 0.1


def test_missing_pyav_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingDependencyError, match="pip install av"):
        load_image(tmp_path / "clip.mp4")


# -- texts ---------------------------------------------------------------------------------------
def test_text_file_skips_empty_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("a dog\n\n  \nun café — 猫\n", encoding="utf-8")
    assert read_texts(path) == [("1", "a dog"), ("4", "un café — 猫")]


def test_csv_and_jsonl_columns(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("key,caption\nx1,a bird\nx2,\nx3,rain\n", encoding="utf-8")
    assert read_texts(csv_path) == [("1", "a bird"), ("3", "rain")]
    assert read_texts(csv_path, id_column="key") == [("x1", "a bird"), ("x3", "rain")]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["é", "", "b"]), encoding="utf-8")
    assert read_texts(jsonl) == [("1", "é"), ("3", "b")]
    with pytest.raises(InputError, match="no column 'nope'"):
        read_texts(csv_path, column="nope")


def test_bad_text_files_are_errors(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(InputError, match="latin.txt.*UTF-8"):
        read_texts(latin)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_texts(broken)


def test_parquet_column(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (optional)")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["x", None, "z"]}), path)
    assert read_texts(path) == [("1", "x"), ("3", "z")]
