"""Issue 20, the search server: uploads bounded from their header before decoding, decoding
outside the encoder's lock, memory back to its level after failures, 4xx for hostile URLs, and
media served only from inside the media folder with content that is what its row says.

One `cmcr serve` process over the tests' search world plus a collection of hostile media rows."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from cmcr.cli import main
from cmcr.serve.query import UploadLimitError, UploadLimits, sniff_upload
from cmcr.data.store import open_store, write_store
from search_fixtures import serving_process
from test_serve import call, get_json, post_file, still_serving

SERVE_OPTIONS = ["--max-upload-mb", "4", "--max-upload-seconds", "30", "--max-sample-rate",
                 "96000", "--max-channels", "4", "--decode-workers", "2"]


# -- files ---------------------------------------------------------------------------------------
def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with one row of data (never decoded here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


def sound(frames: int, rate: int, channels: int = 1, file_format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((frames, channels), dtype=np.float32), rate,
                    format=file_format)
    return buffer.getvalue()


def nan_tiff(side: int) -> bytes:
    """A float TIFF of NaN pixels (deflated: 240 KB at 6000 x 6000): within the pixel limit, it
    is decoded in full (144 MB) before cmcr refuses its NaN values."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), np.nan, dtype=np.float32), mode="F").save(
        buffer, format="TIFF", compression="tiff_deflate")
    return buffer.getvalue()


# -- the server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media_rows(search_world, tmp_path_factory) -> dict[str, object]:
    """An index of the search world's stores plus 8 image rows with a media folder, whose ids
    and sources try to leave it or name files that are not what the row says:
    {"index": folder, "rows": {label: row}}."""
    root = tmp_path_factory.mktemp("hostile-media")
    media, outside = root / "media", root / "outside"
    media.mkdir()
    outside.mkdir()
    Image.new("RGB", (20, 20), (200, 30, 30)).save(media / "inside.png")
    Image.new("RGB", (20, 20), (30, 30, 200)).save(outside / "outside.png")
    (outside / "secret.txt").write_text("not for the web\n")
    (media / "fake.png").write_text("plain text named like a picture\n")
    (media / "link.png").symlink_to(outside / "outside.png")
    (media / "tone.wav").write_bytes(sound(1600, 16000))
    (media / "huge.png").write_bytes(png(12_000, 12_000))
    (media / "line.png").write_bytes(png(5_000_000, 1))
    rows = {"inside": ("inside.png", {}),
            "absolute inside": (str(media / "inside.png"), {}),
            "absolute outside": (str(outside / "outside.png"), {}),
            "relative escape": ("../outside/outside.png", {}),
            "source outside": ("by-source", {"source": str(outside / "secret.txt")}),
            "link out": ("link.png", {}),
            "text as png": ("fake.png", {}),
            "sound in an image row": ("tone.wav", {}),
            "huge picture": ("huge.png", {}),
            "long line": ("line.png", {})}
    unit = np.random.default_rng(0).standard_normal((len(rows), 16)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    write_store(root / "hostile", unit, [item_id for item_id, _ in rows.values()],
                space=open_store(search_world["clip_image"]).space, modality="image",
                metadata=[metadata for _, metadata in rows.values()])
    stores = [str(search_world[name]) for name in ("clip_image", "clap_audio", "clap_text")]
    stores.append(f"path={root / 'hostile'},space=clip,media={media}")
    assert main(["index", "build", "--model", str(search_world["model"]), "--out",
                 str(root / "index"), "--quiet", *[a for s in stores for a in ("--store", s)]]) == 0
    first = 24  # after the search world's three collections of 8 rows
    return {"index": root / "index", "rows": {label: first + n for n, label in enumerate(rows)}}


@pytest.fixture(scope="module")
def server(media_rows) -> tuple[str, int]:
    """`cmcr serve` on the hostile index with tighter audio limits; yields (base URL, pid)."""
    with serving_process(media_rows["index"], *SERVE_OPTIONS) as (url, process):
        yield url, process.pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# -- 1. uploads are bounded from their header, before decoding ------------------------------------
@pytest.mark.parametrize("filename, make, words", [
    ("slow.wav", lambda: sound(20_000, 1), ["20,000 frames at 1 Hz = 20,000.0 s",
                                            "the limit is 30 s", "--max-upload-seconds"]),
    ("long.flac", lambda: sound(31 * 48_000, 48_000, file_format="FLAC"),
     ["31.0 s", "--max-upload-seconds"]),
    ("fast.wav", lambda: sound(1920, 192_000), ["192,000 Hz", "limit is 96,000 Hz",
                                                "--max-sample-rate"]),
    ("wide.wav", lambda: sound(160, 16_000, channels=6), ["6 channels", "limit is 4",
                                                          "--max-channels"]),
    ("huge.png", lambda: png(12_000, 12_000), ["12,000 x 12,000 = 144,000,000 pixels",
                                               "limit is 40,000,000", "--max-image-pixels"]),
    ("line.png", lambda: png(5_000_000, 1), ["5,000,000 x 1", "limit is 100:1",
                                             "--max-image-aspect"]),
    ("bomb.png", lambda: png_header_only(20_000, 20_000), ["400,000,000 pixels",
                                                           "decompression-bomb"]),
])
def test_uploads_over_a_limit_are_refused_before_decoding(server, filename, make, words):
    url, _ = server
    began = time.perf_counter()
    status, answer = post_file(url, filename, make())
    assert status == 413, answer
    assert filename in answer["error"] and all(w in answer["error"] for w in words), answer
    assert time.perf_counter() - began < 5  # read from the header: nothing was decoded
    still_serving(url)


def test_header_checks_name_the_limit_without_a_server():
    with pytest.raises(UploadLimitError, match="1,000 x 1,000 = 1,000,000 pixels; the limit is 9"):
        sniff_upload(png(1000, 1000), "a.png", UploadLimits(max_image_pixels=999))
    assert sniff_upload(png(1000, 1000), "a.png", UploadLimits(max_image_pixels=10**6)) == \
        ("image", ".png")


def test_serve_help_documents_the_limits(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for option in ("--max-upload-seconds", "--max-sample-rate", "--max-channels",
                   "--max-image-pixels", "--max-image-aspect", "--decode-workers"):
        assert option in shown
    assert "default: 60 s" in shown and "default: 40000000" in shown


# -- 2. decoding runs outside the encoder's lock --------------------------------------------------
def test_text_queries_answer_while_uploads_decode(server):
    """Two 6000 x 6000 PNGs (36 Mpx: allowed, about 2 s each to decode and resize) in flight."""
    url, _ = server
    data = png(6000, 6000)
    answers: list[int] = []
    uploads = [threading.Thread(target=lambda: answers.append(post_file(url, "big.png", data)[0]))
               for _ in range(2)]
    for upload in uploads:
        upload.start()
    time.sleep(0.5)
    for text in ("a dog barking", "a blue sky", "rain on a roof"):
        began = time.perf_counter()
        status, _ = get_json(url, f"/api/search?q={text.replace(' ', '+')}&k=2")
        assert status == 200 and time.perf_counter() - began < 1.0
    still_decoding = sum(upload.is_alive() for upload in uploads)
    for upload in uploads:
        upload.join(timeout=120)
    assert still_decoding >= 1, "the uploads ended before the text queries: nothing was shown"
    assert answers == [200, 200]


def test_concurrent_uploads_embed_as_one_alone(server, search_world):
    """Each decode thread has its own preprocessor: uploads at once give the scores of one alone."""
    url, _ = server
    data = (search_world["sounds"] / "sound-3.wav").read_bytes()
    _, alone = post_file(url, "sound-3.wav", data, k="5")
    answers: list[tuple[int, dict]] = []
    threads = [threading.Thread(target=lambda: answers.append(post_file(url, "s.wav", data, k="5")))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [status for status, _ in answers] == [200] * 6
    for _, answer in answers:
        assert answer["results"] == alone["results"]


def test_uploads_past_the_pools_share_are_refused_with_503(search_world):
    from cmcr import Index
    from cmcr.serve.app import SearchAPI, ServerBusy

    api = SearchAPI(Index.open(search_world["index"], device="cpu"), decode_workers=1)
    assert api.max_uploads == 8
    api.uploads = api.max_uploads  # eight uploads decoding or waiting already
    with pytest.raises(ServerBusy, match="holding 8 uploads .* retry"):
        asyncio.run(api.decode_upload(None, "late.png"))
    assert api.uploads == api.max_uploads
    api.decoder.shutdown()


# -- 3. memory returns to its level after failed requests ------------------------------------------
def test_memory_returns_after_uploads_that_fail_once_decoded(server, search_world):
    url, pid = server
    for name in ("picture-1.png", "picture-2.jpg"):
        assert post_file(url, name, (search_world["images"] / name).read_bytes())[0] == 200
    still_serving(url)
    steady = rss_mib(pid)
    data = nan_tiff(6000)
    for _ in range(4):
        status, answer = post_file(url, "nan.tif", data)
        assert status == 400 and "NaN" in answer["error"], answer
    still_serving(url)
    time.sleep(0.5)
    assert rss_mib(pid) <= 1.2 * steady, f"steady {steady:.0f} MiB, now {rss_mib(pid):.0f} MiB"


# -- 4. hostile URLs get a 4xx -------------------------------------------------------------------
@pytest.mark.parametrize("path, status, words", [
    ("/media/" + "7" * 5000, 404, "(5,000 digits) is not in the index"),
    ("/media/0?thumb=0", 400, "thumb must be between 16 and 1024 pixels, got 0"),
    ("/media/0?thumb=-3", 400, "thumb must be"),
    ("/media/0?thumb=", 400, "thumb must be"),
    ("/media/8?thumb=64", 400, "thumb=PX is for image rows"),  # an audio row
    ("/media/abc", 404, "no such page"),
    ("/api/search?like=" + "7" * 5000, 400, "'like' must be an integer"),
])
def test_hostile_urls_get_a_clear_4xx(server, path, status, words):
    url, _ = server
    got, _, body = call(url, "GET", path)
    assert got == status, body
    assert words in json.loads(body)["error"]
    still_serving(url)


# -- 7. media only from inside the media folder, sniffed ------------------------------------------
def test_media_rows_inside_the_folder_are_served_by_their_content(server, media_rows):
    url, _ = server
    for label in ("inside", "absolute inside"):
        status, headers, body = call(url, "GET", f"/media/{media_rows['rows'][label]}")
        assert status == 200 and headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(body)).size == (20, 20)
    status, headers, _ = call(url, "GET", f"/media/{media_rows['rows']['inside']}?thumb=16")
    assert status == 200 and headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize("label, words", [
    ("huge picture", ["12,000 x 12,000 = 144,000,000 pixels", "--max-image-pixels"]),
    ("long line", ["5,000,000 x 1", "--max-image-aspect"]),
])
def test_thumbnails_of_the_collections_own_images_are_bounded(server, media_rows, label, words):
    """An index's own picture over the upload limits gets 413 for its thumbnail, from its
    header, before any pixel is decoded; the file itself is still served as it is."""
    url, _ = server
    row = media_rows["rows"][label]
    got, _, body = call(url, "GET", f"/media/{row}?thumb=64")
    assert got == 413, body
    assert all(word in json.loads(body)["error"] for word in words)
    got, headers, _ = call(url, "GET", f"/media/{row}")
    assert got == 200 and headers["content-type"] == "image/png"
    still_serving(url)


@pytest.mark.parametrize("label, status, words", [
    ("absolute outside", 404, "inside the media folder"),
    ("relative escape", 404, "inside the media folder"),
    ("source outside", 404, "inside the media folder"),
    ("link out", 404, "inside the media folder"),
    ("text as png", 415, "is not an image, audio or video file"),
    ("sound in an image row", 415, "is audio/x-wav"),
])
def test_media_outside_the_folder_or_not_what_they_say_are_refused(server, media_rows, label,
                                                                   status, words):
    url, _ = server
    got, _, body = call(url, "GET", f"/media/{media_rows['rows'][label]}")
    assert got == status, body
    assert words in json.loads(body)["error"]
