"""Output folders (stores, indexes): created with errors that say what is in the way, and written
by one cmcr process at a time.

The lock is ``flock`` on ``FOLDER/.cmcr-lock``, held for the lock's whole lifetime: the kernel
grants it to one process and releases it when that process ends, however it ends, so a lock left
by a process that is gone is taken over by exactly one newcomer. The file also holds the holder's
pid, host and start time, for the messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from cmcr.errors import StoreError

LOCK_FILE = ".cmcr-lock"
HOLDER_BYTES = 4096  # a lock file's record is far shorter; more is not read


def make_directory(path: Path) -> None:
    """Create a store's folder (and its parents), with errors that say what is in the way."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path}: is a file, not a folder; name a new or existing folder to "
                         "hold the store")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"{path}: a parent of this folder is a file, not a folder") from None
    except OSError as err:
        raise StoreError(f"{path}: cannot create the folder ({err.strerror or err})") from None


def _read_holder(descriptor: int) -> dict[str, Any]:
    """The holder record in an open lock file; {} when empty or half-written."""
    try:
        holder = json.loads(os.pread(descriptor, HOLDER_BYTES, 0))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _still_named(descriptor: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``descriptor`` (a holder that finished removes
    it, and a newcomer may already have made a new one)."""
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(descriptor)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _busy(directory: Path, path: Path, holder: dict[str, Any]) -> StoreError:
    who = (f" (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"
           if holder else " (taking the lock just now)")
    return StoreError(f"{directory}: another cmcr process{who} is writing here; wait for it to "
                      f"finish, or delete {path} if that process is gone")


def _lock_descriptor(directory: Path, path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive flock."""
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise StoreError(f"{path}: cannot open the lock file ({err.strerror or err}); "
                             "delete it if it is not a plain file") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise _busy(directory, path, holder) from None
        except OSError as err:
            os.close(descriptor)
            raise StoreError(f"{path}: cannot lock ({err.strerror or err}): the folder's file "
                             "system does not support locks; write to a local folder") from None
        if _still_named(descriptor, path):
            return descriptor
        os.close(descriptor)  # locked a file its holder had just removed: lock the new one


@contextlib.contextmanager
def store_lock(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` while writing it (see the module docstring). A
    lock left by a process that is gone is taken over, with a message; a live one is refused,
    naming its holder."""
    directory = Path(directory)
    make_directory(directory)
    path = directory / LOCK_FILE
    descriptor = _lock_descriptor(directory, path)
    try:
        previous = _read_holder(descriptor) or os.fstat(descriptor).st_size
        if previous:
            pid = previous.get("pid") if isinstance(previous, dict) else None
            print(f"cmcr: {directory}: taking over the lock of a process that is gone "
                  f"(pid {pid if pid is not None else 'unknown'})", file=sys.stderr)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, record, 0)
        yield
    finally:
        if _still_named(descriptor, path):
            path.unlink()  # while still holding it: a newcomer then locks a new file
        os.close(descriptor)
