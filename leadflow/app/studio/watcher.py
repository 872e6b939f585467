"""The folder watcher behind ``leadflow studio``: calls back when a file under the templates
folder changes, through ``watchfiles`` when installed, else by polling the folder's file
times every ``POLL_SECONDS``."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

POLL_SECONDS: Final = 0.05  # the fallback watcher's period: a save is seen within 50 ms


def folder_state(directory: Path) -> frozenset[tuple[str, int, int, int]]:
    """Every file under ``directory`` as (path, inode, size, mtime in ns): a save, a rename
    into place, a new or a removed file each change it."""
    found: set[tuple[str, int, int, int]] = set()
    pending = [str(directory)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # the folder (or a subfolder) vanished: that is a state too
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif not entry.name.startswith("."):  # editors' swap and backup files
                    st = entry.stat()
                    found.add((entry.path, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                continue
    return frozenset(found)


class FolderWatcher:
    """Calls ``on_change`` from a thread of its own whenever a file under ``directory``
    changes: through ``watchfiles`` (inotify) if it is installed, else by polling
    ``folder_state`` every ``POLL_SECONDS``."""

    def __init__(self, directory: Path, on_change: Callable[[], None]) -> None:
        self.directory = directory
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchfiles: Any
        try:
            self._watchfiles = importlib.import_module("watchfiles")
            self.method = "watchfiles"
        except ImportError:
            self._watchfiles = None
            self.method = "polling"

    def start(self) -> None:
        target = self._watch if self._watchfiles is not None else self._poll
        self._thread = threading.Thread(target=target, name="studio-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _poll(self) -> None:
        state = folder_state(self.directory)
        while not self._stop.wait(POLL_SECONDS):
            now = folder_state(self.directory)
            if now != state:
                state = now
                self._on_change()

    def _watch(self) -> None:
        for _changes in self._watchfiles.watch(
            self.directory, stop_event=self._stop, debounce=200, step=20, rust_timeout=500
        ):
            self._on_change()
