"""Results that explain themselves: each row's label (from its store's metadata), its file's
path relative to its collection's root, an audio row's spectrogram thumbnail and duration."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
from PIL import Image

from cmcr import Index
from cmcr.errors import InputError
from cmcr.serve import media
from cmcr.serve.query import UploadLimitError, UploadLimits
from cmcr.serve.segments import CommonFolder, row_label
from test_serve import call, get_json


def test_labels_come_from_the_stores_metadata():
    assert row_label({"source": "/x.png", "label": "dog"}, "image") == "dog"
    assert row_label({"concepts": ["dog", "sea"]}, "audio") == "dog, sea"
    assert row_label({"caption": "a dog on a beach"}, "image") == "a dog on a beach"
    assert row_label({"text": "a dog", "caption": "same"}, "text") == ""  # a text is its caption
    assert row_label({"label": "x" * 400}, "image").endswith("…")
    assert row_label(None, "image") == "" and row_label({"label": True}, "image") == ""


def test_the_common_folder_of_absolute_paths_only():
    folder = CommonFolder()
    for path in ("/data/a/b/1.png", "/data/a/c/2.png", "/data/a/3.png"):
        folder.add(path)
    assert folder.root == "/data/a"
    folder.add("relative.png")
    assert folder.root is None


def test_results_carry_label_relative_path_and_calibrated_score(gap_world):
    index = Index.open(gap_world["index"], device="cpu")
    hits = index.search(text="a bell", modality="audio", k=3)
    for hit in hits:
        assert hit.label == hit.id.split("-")[0] and hit.path == hit.id  # root: the media folder
        assert hit.source == str(gap_world["media"] / hit.id)
    texts = index.search(text="a bell", modality="text", k=1)
    assert texts[0].label is None and texts[0].path is None and texts[0].text


def test_the_api_gives_audio_rows_a_spectrogram_and_a_duration(gap_server):
    status, answer = get_json(gap_server, "/api/search?q=rain&modality=audio&k=2")
    assert status == 200
    hit = answer["results"][0]
    assert hit["label"] in ("dog", "bell", "rain", "siren") and hit["duration"] == 0.5
    assert hit["thumb_url"] == f"/media/{hit['row']}?spectrogram=256"
    status, headers, body = call(gap_server, "GET", hit["thumb_url"])
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (256, 128)
    _, images = get_json(gap_server, "/api/search?q=rain&modality=image&k=1")
    picture = images["results"][0]
    assert picture["thumb_url"] == f"/media/{picture['row']}?thumb=256" and picture["duration"] is None


@pytest.mark.parametrize("query, status, words", [
    ("spectrogram=5000", 400, "spectrogram must be between 16 and 1024 pixels, got 5000"),
    ("spectrogram=abc", 400, "'spectrogram' must be an integer"),
])
def test_spectrogram_sizes_are_bounded(gap_server, query, status, words):
    _, answer = get_json(gap_server, "/api/search?q=rain&modality=audio&k=1")
    got, _, body = call(gap_server, "GET", f"/media/{answer['results'][0]['row']}?{query}")
    assert got == status and words in json.loads(body)["error"]


def test_a_spectrogram_of_an_image_row_is_refused(gap_server):
    _, answer = get_json(gap_server, "/api/search?q=rain&modality=image&k=1")
    got, _, body = call(gap_server, "GET", f"/media/{answer['results'][0]['row']}?spectrogram=64")
    assert got == 400 and "spectrogram=PX is for audio rows" in json.loads(body)["error"]


def test_a_tone_lights_its_own_frequency():
    rate = 16000
    tone = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate).astype(np.float32)
    levels = media.spectrogram_levels(tone, rate, width=32, height=64)
    wanted = np.geomspace(40, rate / 2, 64)[::-1]  # top row: the highest frequency
    loudest = wanted[np.argmax(levels.mean(axis=1))]
    assert 900 < loudest < 1100
    assert levels.shape == (64, 32) and levels.min() >= 0 and levels.max() == 1


def test_spectrograms_are_cached_and_bounded(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.zeros(4000, dtype=np.float32), 8000)
    media.spectrogram.cache_clear()
    first = media.spectrogram(str(path), 64)
    assert media.spectrogram(str(path), 64) is first and media.spectrogram.cache_info().hits == 1
    long = tmp_path / "long.wav"
    soundfile.write(long, np.zeros(8000 * 40, dtype=np.float32), 8000)
    mono, _ = media.read_for_spectrogram(str(long), UploadLimits())
    assert len(mono) == 8000 * media.SPECTROGRAM_SECONDS  # never more than 30 s is read
    wide = tmp_path / "wide.wav"
    soundfile.write(wide, np.zeros((100, 6), dtype=np.float32), 8000)
    with pytest.raises(UploadLimitError, match="6 channels"):
        media.spectrogram(str(wide), 64, UploadLimits(max_channels=4))
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(InputError, match="unreadable audio"):
        media.spectrogram(str(tmp_path / "text.wav"), 64)
