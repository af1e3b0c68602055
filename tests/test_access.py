"""What search users expect of `cmcr serve`: a bearer token on every API, media and metrics
route (and no serving beyond loopback without one), paths relative to each collection unless
--show-paths, filters (min_score, dedup, collection, path prefix), k up to 1,000, and /metrics
in Prometheus' text format."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from cmcr import Index
from cmcr.cli import main
from search_fixtures import free_port, running_server
from test_serve import call, get_json, multipart

TOKEN = "correct-horse-battery-staple"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def token_server(search_world) -> str:
    with running_server(search_world["index"], token=TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def paths_server(search_world) -> str:
    with running_server(search_world["index"], "--show-paths") as url:
        yield url


def get_json_with(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    status, _, body = call(url, "GET", path, headers=headers)
    return status, json.loads(body)


# -- the token -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/info", "/api/search?q=a%20bell", "/api/search?like=3",
                                  "/media/0", "/media/0?thumb=32", "/media/8?spectrogram=64",
                                  "/media/999999", "/metrics", "/api/nothing-here"])
def test_every_api_media_and_metrics_route_needs_the_token(token_server, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                    {"Authorization": TOKEN}):
        status, answer_headers, body = call(token_server, "GET", path, headers=headers)
        assert status == 401, (path, headers, body)
        assert "needs its token" in json.loads(body)["error"]
        assert answer_headers["www-authenticate"].startswith("Bearer")


def test_uploads_need_the_token_too(token_server, search_world):
    body, headers = multipart({"k": "2"}, "q.wav", (search_world["sounds"] / "sound-1.wav").read_bytes())
    assert call(token_server, "POST", "/api/search", body, headers)[0] == 401
    status, _, answer = call(token_server, "POST", "/api/search", body, {**headers, **BEARER})
    assert status == 200 and len(json.loads(answer)["results"]) == 2


def test_with_the_token_everything_answers_and_media_urls_are_signed(token_server):
    assert call(token_server, "GET", "/")[0] == 200  # the page loads, then asks for the token
    assert call(token_server, "GET", "/static/app.js")[0] == 200
    status, info = get_json_with(token_server, "/api/info", BEARER)
    assert status == 200 and info["rows"] == 24
    status, answer = get_json_with(token_server, "/api/search?q=x&modality=audio&k=2", BEARER)
    first, second = answer["results"]
    assert re.fullmatch(r"/media/\d+\?sig=[0-9a-f]{32}", first["media_url"])
    for url in (first["media_url"], first["thumb_url"]):
        assert call(token_server, "GET", url)[0] == 200  # an <img> or <audio> sends no header
    other_row = second["media_url"].replace(f"/{second['row']}?", f"/{first['row']}?")
    assert call(token_server, "GET", other_row)[0] == 401  # a signature opens its own row only
    tampered = first["media_url"][:-1] + ("0" if first["media_url"][-1] != "0" else "1")
    assert call(token_server, "GET", tampered)[0] == 401
    assert call(token_server, "GET", "/metrics", headers=BEARER)[0] == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_serving_beyond_loopback_without_a_token_is_refused(search_world, capsys, host):
    assert main(["serve", str(search_world["index"]), "--host", host, "--port",
                 str(free_port())]) == 2
    error = capsys.readouterr().err
    assert f"--host {host} can be reached from other machines" in error and "--token" in error


def test_a_short_token_is_refused(search_world, capsys):
    assert main(["serve", str(search_world["index"]), "--token", "abc", "--port", "1"]) == 2
    assert "at least 12 characters" in capsys.readouterr().err


# -- paths -------------------------------------------------------------------------------------------
def test_paths_are_relative_to_each_collection_unless_show_paths(live_server, paths_server,
                                                                 search_world):
    status, answer = get_json(live_server, "/api/search?q=x&modality=image&k=3")
    for hit in answer["results"]:
        assert hit["source"] is None and hit["path"] == hit["id"]  # root: the pictures' folder
    status, info = get_json(live_server, "/api/info")
    shown = json.dumps(info)
    assert str(search_world["root"]) not in shown and info["path"] == "index"
    _, answer = get_json(paths_server, "/api/search?q=x&modality=image&k=3")
    for hit in answer["results"]:
        assert hit["source"] == str(search_world["images"] / hit["id"])
    _, info = get_json(paths_server, "/api/info")
    assert info["path"] == str(search_world["index"])


# -- filters -------------------------------------------------------------------------------------
def test_min_score_collection_and_path_prefix_filter_results(gap_server):
    _, everything = get_json(gap_server, "/api/search?q=rain&k=72&rank=cosine")
    threshold = everything["results"][10]["score"]
    _, kept = get_json(gap_server, f"/api/search?q=rain&k=72&min_score={threshold}")
    assert len(kept["results"]) == 11 and min(r["score"] for r in kept["results"]) >= threshold
    _, sounds = get_json(gap_server, "/api/search?q=rain&k=30&collection=sounds")
    assert {r["collection"] for r in sounds["results"]} == {"sounds"}
    assert len(sounds["results"]) == 24
    _, two = get_json(gap_server, "/api/search?q=rain&k=72&collection=sounds,texts")
    assert {r["collection"] for r in two["results"]} == {"sounds", "texts"}
    _, dogs = get_json(gap_server, "/api/search?q=rain&k=30&path_prefix=dog-")
    assert len(dogs["results"]) == 12 and all(r["path"].startswith("dog-") for r in dogs["results"])


def greedy_dedup(index, rows: list[int], threshold: float) -> list[int]:
    """The naive twin: walk the ranking, keep a row unless a kept one is that close to it."""
    kept: list[int] = []
    for row in rows:
        if all(float(index.vector(row) @ index.vector(other)) < threshold for other in kept):
            kept.append(row)
    return kept


@pytest.mark.parametrize("threshold", [0.99, 0.9995])
def test_dedup_drops_near_duplicates_of_better_results(gap_server, gap_world, threshold):
    index = Index.open(gap_world["index"])
    _, everything = get_json(gap_server, "/api/search?q=a%20bell&k=72")
    expected = greedy_dedup(index, [r["row"] for r in everything["results"]], threshold)
    assert 1 < len(expected) < 72
    _, deduped = get_json(gap_server, f"/api/search?q=a%20bell&k=20&dedup={threshold}")
    assert [r["row"] for r in deduped["results"]] == expected[:20]


def test_k_goes_up_to_1000(gap_server):
    status, answer = get_json(gap_server, "/api/search?q=a%20bell&k=1000")
    assert status == 200 and len(answer["results"]) == 72  # every row of the index
    status, answer = get_json(gap_server, "/api/search?q=a%20bell&k=1001")
    assert status == 400 and "k must be between 1 and 1000" in answer["error"]


@pytest.mark.parametrize("query, words", [
    ("min_score=high", "'min_score' must be a number"),
    ("min_score=2", "min_score is a cosine, between -1 and 1"),
    ("dedup=0", "dedup is the cosine"),
    ("dedup=nan", "'dedup' must be a number"),
    ("collection=nope", "no collection 'nope'; its collections: images, sounds, texts"),
    ("collection=texts&modality=audio", "the chosen collections hold no 'audio' rows"),
    ("rank=loudest", "rank must be one of auto, calibrated, cosine"),
])
def test_bad_filters_get_a_clear_400(gap_server, query, words):
    status, answer = get_json(gap_server, f"/api/search?q=rain&{query}")
    assert status == 400 and words in answer["error"], answer


# -- metrics -------------------------------------------------------------------------------------
SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? -?[0-9.e+]+$|^[a-z_]+ -?[0-9.e+]+$')


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text format, checked line by line: HELP/TYPE comments, then samples."""
    samples = {}
    for line in text.strip().splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_count_requests_latency_and_errors(gap_server):
    before = metric_samples(call(gap_server, "GET", "/metrics")[2].decode())
    search = 'cmcr_requests_total{route="/api/search",method="GET",status="200"}'
    errors = 'cmcr_request_errors_total{route="/api/search",status="400"}'
    count = 'cmcr_request_duration_seconds_count{route="/api/search"}'
    for _ in range(3):
        get_json(gap_server, "/api/search?q=rain&k=2")
    get_json(gap_server, "/api/search?q=")
    get_json(gap_server, "/media/" + "9" * 40)  # hostile URLs do not make new labels
    status, headers, body = call(gap_server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    after = metric_samples(body.decode())
    assert after[search] - before.get(search, 0) == 3
    assert after[errors] - before.get(errors, 0) == 1
    assert after[count] - before.get(count, 0) == 4
    buckets = [v for k, v in after.items() if k.startswith(
        'cmcr_request_duration_seconds_bucket{route="/api/search"')]
    assert buckets == sorted(buckets) and buckets[-1] == after[count]
    assert after["cmcr_index_rows"] == 72
    assert all(urllib.parse.unquote(k).count("9" * 40) == 0 for k in after)


def test_filters_search_deeper_until_enough_rows_pass(gap_world):
    index = Index.open(gap_world["index"], device="cpu")
    query = index.encoder.embed_text("a blue sky")
    ranked = index.search(vector=query, k=72)
    sirens = [hit.row for hit in ranked if hit.path and hit.path.startswith("siren-")]
    assert [h.row for h in index.search(vector=query, k=2, path_prefix="siren-")] == sirens[:2]
    assert [h.row for h in index.search(vector=query, k=3, offset=2, path_prefix="siren-")] == \
        sirens[2:5]
    best_cosines = sorted((h.score for h in ranked), reverse=True)
    kept = index.search(vector=query, k=50, min_score=best_cosines[4])
    assert sorted(h.score for h in kept) == sorted(best_cosines[:5])
