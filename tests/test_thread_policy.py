"""The library applies cmcr's thread choice (cmcr.runtime.threads) at its entry points unless the caller
chose first; each case runs in a fresh interpreter, where cmcr sees 5 usable cores, 2 of them
busy, so its choice is 3 threads (torch's own default here is the machine's physical cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cmcr.runtime.threads import THREAD_VARIABLES, physical_cores

ENTRY_POINTS = {
    "Index.open": "import cmcr; cmcr.Index.open(INDEX)",
    "load_space": "import cmcr; cmcr.load_space('clip:' + CLIP)",
    "JointEmbedder": textwrap.dedent("""
        from cmcr.encoders import JointEmbedder
        from cmcr.method.model import ConnectedModel
        from cmcr.spaces.registry import space_class
        JointEmbedder(ConnectedModel.from_pretrained(MODEL),
                      {"clip": space_class("clip")(CLIP), "clap": space_class("clap")(CLAP)})"""),
    "connect": textwrap.dedent("""
        import cmcr
        from cmcr.config import ConnectConfig, SpaceDataConfig
        from cmcr.errors import StoreError
        config = ConnectConfig(spaces={"clip": SpaceDataConfig(OUT + "/none-a"),
                                       "clap": SpaceDataConfig(OUT + "/none-b")})
        try:
            cmcr.connect(config, OUT)  # no such stores: refused after choosing the threads
        except StoreError:
            pass"""),
}


def run_fresh(before: str, entry: str, world: dict, clip: str, clap: str, tmp_path,
              environment: dict[str, str] | None = None) -> dict[str, int]:
    """Run ``before`` then ``entry`` in a new interpreter; torch's and FAISS's thread counts."""
    script = "\n".join([
        "import json, sys, torch",
        "import cmcr.runtime.threads as threads",
        "threads.usable_cores = lambda: 5",
        "threads.busy_cores = lambda interval=0.05: 2",
        f"INDEX, MODEL, CLIP, CLAP, OUT = {str(world['index'])!r}, {str(world['model'])!r}, "
        f"{clip!r}, {clap!r}, {str(tmp_path / 'out')!r}",
        before, entry,
        "faiss = sys.modules.get('faiss')",
        "print(json.dumps({'torch': torch.get_num_threads(),",
        "                  'faiss': faiss.omp_get_max_threads() if faiss else None}))"])
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    env.update(environment or {})
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_library_entry_points_apply_cmcrs_thread_choice(entry, search_world, tiny_clip_dir,
                                                        tiny_clap_dir, tmp_path):
    found = run_fresh("", ENTRY_POINTS[entry], search_world, str(tiny_clip_dir),
                      str(tiny_clap_dir), tmp_path)
    assert found["torch"] == 3, found
    if entry == "Index.open":
        assert found["faiss"] == 3


def test_a_thread_count_the_caller_set_is_kept(search_world, tiny_clip_dir, tiny_clap_dir,
                                               tmp_path):
    chosen = physical_cores() + 2  # not torch's default, not cmcr's choice
    found = run_fresh(f"torch.set_num_threads({chosen})", ENTRY_POINTS["Index.open"],
                      search_world, str(tiny_clip_dir), str(tiny_clap_dir), tmp_path)
    assert found["torch"] == chosen


def test_omp_num_threads_is_the_callers_choice(search_world, tiny_clip_dir, tiny_clap_dir,
                                              tmp_path):
    found = run_fresh("", ENTRY_POINTS["load_space"], search_world, str(tiny_clip_dir),
                      str(tiny_clap_dir), tmp_path, {"OMP_NUM_THREADS": "1"})
    assert found["torch"] == 1


def test_cmcr_chooses_once_and_later_choices_of_the_caller_stand(search_world, tiny_clip_dir,
                                                                tmp_path, tiny_clap_dir):
    found = run_fresh("cmcr_first = __import__('cmcr').Index.open(INDEX)\n"
                      "torch.set_num_threads(1)", ENTRY_POINTS["Index.open"], search_world,
                      str(tiny_clip_dir), str(tiny_clap_dir), tmp_path)
    assert found["torch"] == 1


def test_physical_cores_count_distinct_cores_of_each_package(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {n}\nphysical id\t: {n // 4}\ncore id\t\t: "
                               f"{(n % 4) // 2}\n\n" for n in range(8)))  # 2 packages, 2 cores, HT
    assert physical_cores(cpuinfo) == 4
    assert physical_cores(tmp_path / "missing") == (os.cpu_count() or 1)
