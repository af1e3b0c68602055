"""Redraw docs/search-page.png: `cmcr serve` on a finished demo, one world clip dropped on the
page, images only. Needs Chromium on PATH and playwright (the test extra).

    cmcr demo --out runs/demo
    python docs/make_search_page_png.py runs/demo --clip-concept hammer --out docs/search-page.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import threading
import time
from pathlib import Path

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_in_background(demo_dir: Path, port: int) -> None:
    """``cmcr serve DEMO`` on 127.0.0.1:PORT in a daemon thread."""
    import uvicorn

    from cmcr import Index
    from cmcr.serve.app import create_app

    app = create_app(Index.open(demo_dir, device="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    time.sleep(3)


def test_clip(demo_dir: Path, concept: str) -> Path:
    """The first test clip in which ``concept`` sounds alone."""
    with open(demo_dir / "world" / "test_pairs.jsonl", encoding="utf-8") as records:
        for line in records:
            record = json.loads(line)
            if record["audio_concepts"] == [concept]:
                return demo_dir / "world" / record["audio"]
    raise SystemExit(f"no test clip of {concept!r} in {demo_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="a finished `cmcr demo` folder")
    parser.add_argument("--clip-concept", default="hammer", help="concept of the dropped clip")
    parser.add_argument("--out", type=Path, default=Path("docs/search-page.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    serve_in_background(args.demo, port)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_function("document.querySelector('#modality').options.length > 1")
        page.select_option("#modality", "image")
        page.set_input_files("#file", str(test_clip(args.demo, args.clip_concept)))
        page.wait_for_selector("#results .result")
        time.sleep(1)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
