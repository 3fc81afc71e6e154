"""One model-server puller for all the workers of `botserver run --workers N`.

The worker holding `model-pulls-<url key>.lock` (an flock, freed when its poller stops or its
process dies) pulls on schedule and publishes in the shared directory what it loaded (the archive)
and how its latest pull went; the others load that archive when it changes and show that
outcome in /status. One pull an interval, and one log line a failure, for the whole server.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import IO, Any

from server.worker_claims import read_object, workers_dir, write_json


def shared_pulls(url: str) -> SharedPulls | None:
    """The pulls of `url` shared by the workers; None in a server of one process."""
    shared = workers_dir()
    return SharedPulls(shared, url) if shared is not None else None


class SharedPulls:
    """A poller's side of the shared pulls (`read` and `publish` block: call them in a
    thread)."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        # Each model server (a PUT /model may name another) has its own puller and files.
        self.key = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.record_path = directory / f"model-pulls-{self.key}.json"
        self._lock: IO[bytes] | None = None
        # Models published before this poller began are older than what it pulled itself.
        record = self.read()
        self.seen = record["serial"] if record is not None else 0

    def lead(self) -> bool:
        """Whether this poller pulls for all the workers (taking the lock if it is free).

        Called on the event loop (a non-blocking flock): in a thread, a poller stopped
        meanwhile would leave the lock taken for good."""
        if self._lock is not None:
            return True
        try:
            lock = open(self.directory / f"model-pulls-{self.key}.lock", "ab")
        except OSError:  # the directory gone (the server stops): nobody to pull for
            return False
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return False
        self._lock = lock
        return True

    def resign(self) -> None:
        """Free the lock: another worker's poller pulls from now on."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def read(self) -> dict[str, Any] | None:
        """The latest record of this model server, or None."""
        record = read_object(self.record_path)
        return record if record is not None and isinstance(record.get("serial"), int) else None

    def publish(
        self,
        error: dict[str, str] | None,
        loaded: tuple[Path, str, str] | None = None,
    ) -> None:
        """Record the latest pull's outcome (`error`, None when it worked) and, when it
        loaded a model, the model: its archive (copied), fingerprint and file name."""
        record = self.read() or {"serial": 0, "model": None}
        record["error"] = error
        if loaded is not None:
            path, fingerprint, model_file = loaded
            serial = record["serial"] + 1
            name = f"model-pull-{self.key}-{serial}.tar.gz"
            # Copies a puller killed meanwhile left (this one holds the lock: none is going).
            for left in self.directory.glob(f"model-pull-{self.key}-*.partial"):
                left.unlink(missing_ok=True)
            partial = self.directory / f"{name}.{os.getpid()}.partial"
            try:
                shutil.copyfile(path, partial)
            except OSError:  # a full disk: the others keep their model (the caller says so)
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, self.directory / name)
            previous = (record.get("model") or {}).get("archive")
            record.update(
                serial=serial,
                model={"archive": name, "fingerprint": fingerprint, "model_file": model_file},
            )
            self.seen = serial
            write_json(self.record_path, record)
            # One before the latest stays: a worker may be reading it still.
            for old in self.directory.glob(f"model-pull-{self.key}-*.tar.gz"):
                if old.name not in (name, previous):
                    old.unlink(missing_ok=True)
            return
        write_json(self.record_path, record)

    def archive(self, record: dict[str, Any]) -> Path:
        return self.directory / str(record["model"]["archive"])
