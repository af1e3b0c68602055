"""`cmcr serve` as a real process on 127.0.0.1: the JSON API, media, and bad requests (each gets
a clear 4xx and the server keeps serving)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
import uuid
from pathlib import Path

import pytest

from cmcr import Index


def call(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def get_json(url: str, path: str) -> tuple[int, dict]:
    status, _, body = call(url, "GET", path)
    return status, json.loads(body)


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                 + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_file(url: str, filename: str, data: bytes, **fields: str) -> tuple[int, dict]:
    body, headers = multipart(fields, filename, data)
    status, _, answer = call(url, "POST", "/api/search", body, headers)
    return status, json.loads(answer)


def still_serving(url: str) -> None:
    status, answer = get_json(url, "/api/search?q=a%20bell%20ringing&k=2")
    assert status == 200 and len(answer["results"]) == 2


# -- the API ---------------------------------------------------------------------------------------
def test_info_describes_the_index(live_server):
    status, info = get_json(live_server, "/api/info")
    assert status == 200 and info["rows"] == 24 and info["modalities"] == ["audio", "image", "text"]


def test_text_search_matches_the_python_api(live_server, search_world):
    status, answer = get_json(live_server, "/api/search?q=a%20blue%20sky&modality=image&k=5")
    assert status == 200
    expected = Index.open(search_world["index"], device="cpu").search(text="a blue sky",
                                                                      modality="image", k=5)
    assert [r["id"] for r in answer["results"]] == [h.id for h in expected]
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    for result in answer["results"]:
        assert {"id", "modality", "space", "score", "media_url"} <= set(result)
        assert result["modality"] == "image" and result["media_url"].startswith("/media/")


def test_uploaded_audio_finds_itself_and_images(live_server, search_world):
    data = (search_world["sounds"] / "sound-2.wav").read_bytes()
    status, answer = post_file(live_server, "sound-2.wav", data, modality="audio", k="3")
    assert status == 200 and answer["query"]["modality"] == "audio"
    assert answer["results"][0]["id"] == "sound-2.wav"
    status, answer = post_file(live_server, "query.wav", data, modality="image", k="4")
    assert status == 200 and [r["modality"] for r in answer["results"]] == ["image"] * 4


def test_paging_and_more_like_this(live_server):
    _, first = get_json(live_server, "/api/search?q=rain&k=5")
    _, second = get_json(live_server, "/api/search?q=rain&k=5&offset=5")
    _, both = get_json(live_server, "/api/search?q=rain&k=10")
    assert [r["row"] for r in first["results"] + second["results"]] == \
        [r["row"] for r in both["results"]]
    row = first["results"][0]["row"]
    status, like = get_json(live_server, f"/api/search?like={row}&modality=audio&k=3")
    assert status == 200 and row not in [r["row"] for r in like["results"]]
    assert {r["modality"] for r in like["results"]} == {"audio"}


def test_media_are_served_for_index_rows(live_server, search_world):
    _, answer = get_json(live_server, "/api/search?q=x&modality=audio&k=1")
    hit = answer["results"][0]
    status, headers, body = call(live_server, "GET", hit["media_url"])
    assert status == 200 and headers["content-type"] == "audio/x-wav"
    assert body == (search_world["sounds"] / hit["id"]).read_bytes()
    _, answer = get_json(live_server, "/api/search?q=x&modality=text&k=1")
    assert answer["results"][0]["media_url"] is None and answer["results"][0]["text"]


def test_image_rows_have_thumbnails(live_server):
    from io import BytesIO

    from PIL import Image

    _, answer = get_json(live_server, "/api/search?q=x&modality=image&k=1")
    status, headers, body = call(live_server, "GET", answer["results"][0]["media_url"] + "?thumb=32")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert max(Image.open(BytesIO(body)).size) == 32  # the pictures are 48 x 48
    status, _, body = call(live_server, "GET", answer["results"][0]["media_url"] + "?thumb=5000")
    assert status == 400 and "thumb must be" in json.loads(body)["error"]


def test_the_page_and_its_assets_load(live_server):
    status, headers, body = call(live_server, "GET", "/")
    assert status == 200 and b"drop-zone" in body and headers["content-type"].startswith("text/html")
    assert call(live_server, "GET", "/static/app.js")[0] == 200


# -- bad requests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, status, words", [
    ("/api/search?q=", 400, "exactly one query"),
    ("/api/search?q=%20%20", 400, "empty"),
    ("/api/search?q=x&modality=point_cloud", 400, "no 'point_cloud' rows"),
    ("/api/search?q=x&k=abc", 400, "integer"),
    ("/api/search?q=x&k=100000", 400, "k must be"),
    ("/api/search?q=x&like=3", 400, "exactly one query"),
    ("/api/search?like=99999", 404, "not in the index"),
    ("/media/99999", 404, "not in the index"),
    ("/media/20", 404, "no media file"),  # a text row
    ("/media/../../etc/passwd", 404, "no such page"),
    ("/media/..%2F..%2Fetc%2Fpasswd", 404, "no such page"),
    ("/static/../index.py", 404, ""),
])
def test_bad_requests_get_a_clear_4xx(live_server, path, status, words):
    got, _, body = call(live_server, "GET", path)
    assert got == status, body
    if words:
        assert words in json.loads(body)["error"]
    still_serving(live_server)


def test_uploads_that_are_not_what_they_say_are_refused(live_server, search_world):
    status, answer = post_file(live_server, "photo.jpg", b"this is plain text, not a picture")
    assert status == 415 and "neither an image" in answer["error"]
    wav = (search_world["sounds"] / "sound-1.wav").read_bytes()
    status, answer = post_file(live_server, "photo.jpg", wav)
    assert status == 415 and "named like image" in answer["error"]
    status, answer = post_file(live_server, "empty.wav", b"")
    assert status == 400 and "empty" in answer["error"]
    still_serving(live_server)


def test_a_truncated_wav_is_refused(live_server, search_world):
    wav = (search_world["sounds"] / "sound-1.wav").read_bytes()
    status, answer = post_file(live_server, "cut.wav", wav[: len(wav) // 2])
    assert status == 400 and "truncated WAV" in answer["error"] and "cut.wav" in answer["error"]
    still_serving(live_server)


def test_a_post_without_a_file_is_refused(live_server):
    status, _, answer = call(live_server, "POST", "/api/search", b"k=3",
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "multipart" in json.loads(answer)["error"]


def read_reply(connection: socket.socket) -> str:
    """Everything the server sends until it closes the connection or goes quiet for a second."""
    connection.settimeout(1.0)
    parts = []
    try:
        while chunk := connection.recv(65536):
            parts.append(chunk)
    except (TimeoutError, socket.timeout, ConnectionResetError):
        pass
    return b"".join(parts).decode(errors="replace")


def test_a_1gb_upload_is_refused_before_it_is_read(live_server):
    """Declared length: answered at once; the body is never sent."""
    parsed = urllib.parse.urlparse(live_server)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as connection:
        connection.sendall(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/"
                           b"form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n--b\r\n")
        reply = read_reply(connection)
    assert reply.startswith("HTTP/1.1 413") and "upload too large" in reply
    still_serving(live_server)


def test_a_streamed_upload_over_the_limit_is_cut_off(live_server):
    """No declared length (chunked): counted as it arrives, refused past the limit (1 MB here)."""
    parsed = urllib.parse.urlparse(live_server)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as connection:
        connection.sendall(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/"
                           b"form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
        opening = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        connection.sendall(b"%x\r\n" % len(opening) + opening + b"\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(40):  # 2.6 MB at most; the server answers after ~1 MB
                connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(connection)
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    still_serving(live_server)


def test_serve_refuses_an_index_of_another_model(search_world, tmp_path, capsys):
    from cmcr.cli import main
    from search_fixtures import build_joint_model

    other = build_joint_model(tmp_path / "other", out_dim=8)
    import shutil

    index_copy = shutil.copytree(search_world["index"], tmp_path / "index")
    manifest = json.loads((index_copy / "index.json").read_text())
    manifest["model"] = str(other)
    manifest["model_digest"] = "0" * 64
    (index_copy / "index.json").write_text(json.dumps(manifest))
    assert main(["serve", str(index_copy), "--port", "1"]) == 2
    assert "another model" in capsys.readouterr().err
    assert Path(other).is_dir()


def test_serve_on_a_port_in_use_is_a_clear_error(search_world, capsys):
    from cmcr.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(search_world["index"]), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
