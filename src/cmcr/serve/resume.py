"""Starting an index build where a killed one stopped: a build writes ``index.json`` with
``complete: false`` first, so running the same build again resumes it (same model, same first
stores, intact segments) or replaces what it wrote; a finished index is kept unless
``--overwrite``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from cmcr.errors import StoreError
from cmcr.serve.manifest import INDEX_FILE, IndexManifest, read_manifest, remove_segment_files

Verify = Callable[[Path, IndexManifest], None]  # checks an index's segments (Index.verify)


def resolved(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def refuse_finished(directory: Path, overwrite: bool) -> None:
    """A build may not replace a finished index (or an unreadable one) without ``overwrite``."""
    if overwrite or not (directory / INDEX_FILE).exists():
        return
    try:
        manifest = read_manifest(directory)
    except StoreError as err:
        raise StoreError(f"{err}; pass --overwrite to replace it") from None
    if manifest.complete:
        raise StoreError(f"{directory}: an index is already there; add stores with "
                         "'cmcr index add', or pass --overwrite to replace it")


def starting_manifest(directory: Path, fresh: IndexManifest, stores: Sequence[str],
                      overwrite: bool, verify: Verify) -> IndexManifest:
    """What a build starts from: an unfinished build's manifest, its finished collections kept,
    when they can be resumed (:func:`why_not_resumable`); else ``fresh``, after removing what
    a build wrote there. Called under the folder's lock."""
    existing = None if overwrite or not (directory / INDEX_FILE).exists() \
        else read_manifest(directory)
    why_not = why_not_resumable(directory, existing, fresh, stores, verify) if existing else "new"
    if why_not is None:
        print(f"cmcr: {directory}: resuming an unfinished build ({len(existing.collections)} of "
              f"{len(stores)} stores were done)", file=sys.stderr)
        remove_segment_files(directory, keep={c.segment for c in existing.collections})
        existing.model = fresh.model
        return existing
    if existing is not None:
        print(f"cmcr: {directory}: replacing an unfinished index ({why_not})", file=sys.stderr)
    remove_index_files(directory)
    return fresh


def why_not_resumable(directory: Path, existing: IndexManifest, fresh: IndexManifest,
                      stores: Sequence[str], verify: Verify) -> str | None:
    """None when the unfinished index was begun with the same model, its collections are the
    first of ``sources`` and its segments are intact; else why it cannot be resumed."""
    if existing.model_digest != fresh.model_digest or existing.dim != fresh.dim:
        return "it was begun with another model"
    done = [c.store for c in existing.collections]
    if done != [resolved(path) for path in stores][:len(done)]:
        return "it was begun with other stores"
    try:
        verify(directory, existing)
    except StoreError as err:
        return f"a finished segment is damaged: {err}"
    return None


def remove_index_files(directory: Path) -> None:
    """Delete what a build writes: the segments (listed or half-written) and ``index.json``;
    never other files in the folder."""
    remove_segment_files(directory)
    (directory / INDEX_FILE).unlink(missing_ok=True)
