"""The result store: content-addressed hidden states and JSON records, so a model runs once per input.

The key hashes everything that changes the states: the model (alias and package version, local
weights' sizes and times, or hub id and revision), the dtype and device kind, the prompt format,
the exact bytes of the data file, the split, the token read and the state format version. Anything
else (direction method, layers, analyses) is computed from the cached states. The control stage's
mode evaluations are JSON records and its Optuna studies journal files, named by the same
:func:`content_key`. Writes go to a temporary file renamed into place, so an interrupted run never
leaves a file a later run trusts.

>>> key = state_key({"model": "m"}, "ab12", {"seed": 1})
>>> len(key)
24
>>> content_key({"b": 1, "a": [1, 2]}) == content_key({"a": [1, 2], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from mvplatform.errors import MvpError
from mvplatform.extraction import PairStates

FORMAT_VERSION = 1


def content_key(content: Any, length: int = 24) -> str:
    """The one content hash of the store: sha256 of ``content`` as canonical JSON (sorted keys).

    Arrays enter through :func:`array_digest`, so a key never depends on object identity.
    """
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def array_digest(array: np.ndarray | None) -> str | None:
    """sha256 of an array's float32 bytes (None stays None): how arrays enter a :func:`content_key`."""
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def state_key(model: dict[str, Any], data_digest: str, params: dict[str, Any]) -> str:
    """Key of one item's hidden states: the model's fingerprint, the data file's digest, the settings."""
    return content_key({"format": FORMAT_VERSION, "model": model, "data": data_digest, "params": params})


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class StateStore:
    """``{root}/states/{key[:2]}/{key}.safetensors``, records ``{root}/{kind}/{key}.json``, studies
    ``{root}/studies/{name}.journal``; only the driver writes here."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "states" / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> PairStates | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return PairStates.load(path)
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed, never trusted
            return None

    def put(self, key: str, states: PairStates) -> Path:
        path = self.path(key)
        self._write(path, states.save)
        return path

    def record_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get_record(self, kind: str, key: str) -> Any | None:
        """A stored JSON record, or None when absent or unreadable (then it is recomputed)."""
        try:
            return json.loads(self.record_path(kind, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put_record(self, kind: str, key: str, record: Any) -> Path:
        path = self.record_path(kind, key)
        text = json.dumps(record, ensure_ascii=False)
        self._write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path

    def study_path(self, name: str) -> Path:
        """The Optuna journal file of a study named by its content (see ``ray_jobs.control``)."""
        return self.root / "studies" / f"{name}.journal"

    def _write(self, path: Path, write: Callable[[Path], object]) -> None:
        """Atomic: ``write`` fills a temporary file beside ``path``, which is then renamed into place."""
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(handle)
            write(Path(tmp))
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise MvpError(f"cannot write the result store at {self.root} ({exc}); set results.dir to a "
                           "writable folder") from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Fail before any work when the cache folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise MvpError(f"results folder {self.root} is not writable ({exc}); set results.dir "
                           "to a writable folder") from None

    @contextmanager
    def submission_lock(self, spec_name: str, tracking_uri: str) -> Iterator[None]:
        """Held while one submission of ``spec_name`` to ``tracking_uri`` runs; a second is refused.

        Two at once would both resume the same parent run and log an item twice. The lock is a
        file lock in this store (released by the OS if the holder dies), so it covers submissions
        sharing this results folder: on a cluster, the driver's machine.
        """
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
        path = self.root / "locks" / f"{spec_name}-{digest}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise MvpError(f"another `mvp submit` of spec {spec_name!r} to {tracking_uri} is running (lock {path}); "
                           f"wait for it to finish (`mvp status` shows its progress), then submit again") from None
        try:
            yield
        finally:
            lock.release()
