"""The Ray path on real Ray: a local Ray on 2 CPUs started here, and one two-node cluster on
loopback. The store equals the single-process store byte for byte, a killed driver is resumed,
bad files go to errors.jsonl beside their batch's good rows, retrieval gives the same rows.

Ray is installed by the test extra; without it these tests skip, except in CI (CI=true), where
they fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmcr.cli import main
from cmcr.embed import ERRORS_FILE, InputItem, collect_inputs, embed_items
from cmcr.errors import ConfigError
from cmcr.method.retrieval import retrieve_pseudo_embeddings
from cmcr.spaces import load_space
from cmcr.data.store import open_store, write_store

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None and os.environ.get("CI") != "true",
                               reason="Ray is not installed: pip install 'cmcr[ray]'")
BATCHES = dict(batch_size=3, shard_rows=4)  # 13 items: 5 batches, 4 shards; bad files inside


@pytest.fixture
def local_ray():
    """This process's Ray: a local one on 2 CPUs, started by the first test that needs it and
    kept for the next ones (stopped at the end of the module)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="module", autouse=True)
def _stop_ray():
    yield
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def single_store(tiny_clip_dir, image_dir, tmp_path_factory):
    """The store one process writes (no data-loader workers) for the same inputs."""
    out = tmp_path_factory.mktemp("single") / "store"
    embed_items(load_space(f"clip:{tiny_clip_dir}", device="cpu"), "image",
                collect_inputs(image_dir, "image"), out, workers=0, progress=False, **BATCHES)
    return out


def _store_files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "embed.json"}


# -- without Ray ---------------------------------------------------------------------------------
def test_a_missing_ray_names_the_extra_to_install(tiny_clip_dir, image_dir, tmp_path,
                                                 monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "image", "--input",
                 str(image_dir), "--out", str(tmp_path / "s"), "--quiet", "--ray"])
    assert code == 2 and "pip install 'cmcr[ray]'" in capsys.readouterr().err


def test_the_core_never_imports_ray():
    modules = ("cmcr, cmcr.cli, cmcr.pipeline, cmcr.embed, cmcr.method.retrieval, cmcr.data.store, "
               "cmcr.method.train, cmcr.method.model, cmcr.method.objective, cmcr.distributed")
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_retrieval_engine_is_local_unless_asked_and_checked():
    from cmcr.config import ConnectConfig

    spaces = {"a": {"queries": "a"}, "b": {"queries": "b"}}
    assert ConnectConfig.from_dict({"spaces": spaces}).retrieval.engine == "local"
    with pytest.raises(ConfigError, match="'retrieval.engine' must be one of local, ray"):
        ConnectConfig.from_dict({"spaces": spaces, "retrieval": {"engine": "spark"}})


def test_file_lists_may_be_tables_of_paths_and_uris(image_dir, tmp_path):
    from cmcr.distributed import list_inputs

    listing = tmp_path / "files.csv"
    uri = (image_dir / "img01.jpg").as_uri()
    listing.write_text(f"path,key\n{image_dir / 'img02.jpg'},b\n{uri},a\n", encoding="utf-8")
    assert list_inputs(listing, "image") == [
        InputItem(str(image_dir / "img02.jpg"), str(image_dir / "img02.jpg")), InputItem(uri, uri)]
    assert [i.id for i in list_inputs(listing, "image", id_column="key")] == ["b", "a"]
    text_list = tmp_path / "files.txt"
    text_list.write_text("img01.jpg\nsub/img00.jpg\n", encoding="utf-8")
    shutil.copy(image_dir / "img01.jpg", tmp_path)
    (tmp_path / "sub").mkdir()
    shutil.copy(image_dir / "sub" / "img00.jpg", tmp_path / "sub")
    assert list_inputs(text_list, "image") == collect_inputs(text_list, "image")


# -- a local Ray ---------------------------------------------------------------------------------
@needs_ray
def test_ray_store_equals_the_single_process_store_byte_for_byte(local_ray, tiny_clip_dir,
                                                                 image_dir, single_store,
                                                                 tmp_path, capsys):
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "image", "--input",
                 str(image_dir), "--out", str(tmp_path / "ray"), "--batch-size", "3",
                 "--shard-rows", "4", "--quiet", "--ray"])
    assert code == 0 and "stored 11 of 13 image embeddings" in capsys.readouterr().out
    assert _store_files(tmp_path / "ray") == _store_files(single_store)  # errors.jsonl too
    errors = (tmp_path / "ray" / ERRORS_FILE).read_text()
    assert "img03b.jpg" in errors and "sub/zz.png" in errors  # each beside good rows of its batch


KILLED_DRIVER = """
import os, sys
from cmcr.distributed import embed_on_ray
from cmcr.embed import collect_inputs

spec, inputs, out, address = sys.argv[1:]


def die(batch_number):
    if batch_number == 1:  # one shard is on disk, Ray Data still runs: kill -9 the driver
        os.kill(os.getpid(), 9)


embed_on_ray(spec, "image", collect_inputs(inputs, "image"), out, address=address, batch_size=3,
             shard_rows=4, progress=False, on_batch=die)
"""


@needs_ray
def test_a_killed_driver_resumes_into_the_same_store(local_ray, tiny_clip_dir, image_dir,
                                                     single_store, tmp_path):
    from cmcr.distributed import embed_on_ray

    spec, out = f"clip:{tiny_clip_dir}", tmp_path / "store"
    address = local_ray.get_runtime_context().gcs_address
    killed = subprocess.run([sys.executable, "-c", KILLED_DRIVER, spec, str(image_dir), str(out),
                             address], capture_output=True, text=True, timeout=180)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert open_store(out).info.complete is False and len(open_store(out)) == 4
    summary = embed_on_ray(spec, "image", collect_inputs(image_dir, "image"), out,
                           progress=False, **BATCHES)
    assert summary.resumed_at > 0 and summary.rows == 11  # only the missing part was redone
    assert _store_files(out) == _store_files(single_store)


@needs_ray
def test_uris_are_fetched_and_a_bad_one_fails_alone(local_ray, tiny_clip_dir, image_dir):
    from cmcr.distributed import decode_grid_batch

    preprocessor = load_space(f"clip:{tiny_clip_dir}", device="cpu").preprocessor("image")
    good = [image_dir / "img01.jpg", image_dir / "img02.jpg"]
    sources = [good[0].as_uri(), "file:///nowhere/gone.jpg", str(good[1]),
               (image_dir / "img03b.jpg").as_uri()]
    row = {"first": 6, "sources": [s.encode() for s in sources]}
    payload = __import__("pickle").loads(decode_grid_batch(row, preprocessor, "image")["payload"])
    assert payload["indices"] == [6, 8]
    expected = preprocessor.collate([preprocessor.load(path) for path in good])
    assert np.array_equal(payload["inputs"]["pixel_values"], expected["pixel_values"])
    (missing, why), (broken, reason) = payload["errors"]
    assert (missing, broken) == (7, 9) and "file:///nowhere/gone.jpg: cannot fetch" in why
    assert sources[3] in reason and "cmcr-fetch" not in reason


@needs_ray
@pytest.mark.parametrize("top_k", [None, 5])
def test_retrieval_on_ray_equals_the_single_machine_retrieval(local_ray, top_k, tmp_path):
    from cmcr.distributed import retrieve_on_ray

    rng = np.random.default_rng(0)
    queries = rng.normal(size=(150, 8)).astype(np.float32)
    memory = write_store(tmp_path / "memory", rng.normal(size=(90, 8)).astype(np.float32))
    expected = retrieve_pseudo_embeddings(queries, memory, 0.05, top_k, device="cpu")
    on_disk = retrieve_on_ray(queries, memory, 0.05, top_k, query_chunk=32, memory_chunk=40)
    in_ram = retrieve_on_ray(queries, memory.to_numpy(), 0.05, top_k, query_chunk=64)
    np.testing.assert_allclose(on_disk, expected, atol=1e-6)
    np.testing.assert_allclose(in_ram, expected, atol=1e-6)


@needs_ray
def test_connect_with_ray_caches_the_same_pseudo_pairs(local_ray, tmp_path):
    from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example

    sizes = SyntheticSizes(texts=300, images=150, audio=150, test_pairs=20, dim_a=16, dim_b=12)
    config = write_synthetic_example(tmp_path / "data", seed=1, sizes=sizes, epochs=1,
                                     batch_size=64)
    for run, extra in (("local", []), ("ray", ["--ray"])):
        assert main(["connect", str(config), "--out", str(tmp_path / run), "--quiet", *extra]) == 0
    recorded = yaml.safe_load((tmp_path / "ray" / "connect_config.yaml").read_text())
    assert recorded["retrieval"]["engine"] == "ray"
    caches = sorted(p.name for p in (tmp_path / "local" / "cache").iterdir())
    assert len(caches) == 2
    assert caches == sorted(p.name for p in (tmp_path / "ray" / "cache").iterdir())
    for name in caches:
        np.testing.assert_allclose(open_store(tmp_path / "ray" / "cache" / name).to_numpy(),
                                   open_store(tmp_path / "local" / "cache" / name).to_numpy(),
                                   atol=1e-6)


# -- two nodes on loopback -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_node(*arguments: str) -> subprocess.Popen:
    """`ray start ... --block` in its own process: SIGTERM stops the node it started. The
    nodes authenticate as this process does (token mode once it has started a local Ray; a
    `ray start` left to itself would ask for a token that a fresh driver does not send)."""
    command = [shutil.which("ray") or "ray", "start", "--block", "--num-cpus", "2",
               "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", *arguments]
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.setdefault("RAY_AUTH_MODE", "disabled")
    environment["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # no 30 s drain when stopped
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=environment)


def _wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the head node did not start"
            time.sleep(0.2)


@pytest.fixture
def keep_current_cluster_file():
    """`ray start --head` records its address for `ray.init()` to find and leaves it behind when
    stopped: put back what was there, so that no later run looks for this test's cluster."""
    path = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    before = path.read_bytes() if path.is_file() else None
    yield
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


def _wait_for_nodes(count: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while sum(node["Alive"] for node in ray.nodes()) < count:
        assert time.monotonic() < deadline, f"the cluster did not reach {count} nodes"
        time.sleep(0.5)


@needs_ray
def test_two_nodes_on_loopback_both_receive_work(tiny_clip_dir, image_dir, single_store,
                                                 tmp_path, keep_current_cluster_file):
    from cmcr.distributed import StageSeconds, embed_on_ray

    if ray.is_initialized():
        ray.shutdown()  # leave the local Ray: this test drives a cluster of its own
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_start_node("--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                         "--include-dashboard", "false")]
    try:
        _wait_for_port(port)
        ray.init(address=address, log_to_driver=False)
        nodes.append(_start_node("--address", address, "--node-ip-address", "127.0.0.1"))
        _wait_for_nodes(2)
        stages = StageSeconds()
        embed_on_ray(f"clip:{tiny_clip_dir}", "image", collect_inputs(image_dir, "image"),
                     tmp_path / "store", progress=False, stages=stages, actors=2, **BATCHES)
        assert len(stages.nodes) == 2, stages
        assert _store_files(tmp_path / "store") == _store_files(single_store)
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            node.terminate()
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
