"""A content-addressed cache of hidden states, so a model runs once per input set.

The key hashes everything that changes the states: the model (alias and package version, local
weights' sizes and times, or hub id and revision), the dtype and device kind, the prompt format,
the exact bytes of the data file, the split, the token read and the state format version. Anything
else (direction method, layers, analyses) is computed from the cached states. Writes go to a
temporary file renamed into place, so an interrupted run never leaves a file a later run trusts.

>>> key = state_key({"model": "m"}, "ab12", {"seed": 1})
>>> len(key)
24
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mvplatform.errors import MvpError
from mvplatform.extraction import PairStates

FORMAT_VERSION = 1


def state_key(model: dict[str, Any], data_digest: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, "model": model, "data": data_digest, "params": params},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class StateStore:
    """``{root}/states/{key[:2]}/{key}.safetensors``."""

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
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(handle)
            states.save(Path(tmp))
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise MvpError(f"cannot write the state cache at {self.root} ({exc}); set results.dir to a "
                           "writable folder") from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return path

    def check_writable(self) -> None:
        """Fail before any work when the cache folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise MvpError(f"results folder {self.root} is not writable ({exc}); set results.dir "
                           "to a writable folder") from None
