"""`mvp doctor`: is this installation ready to run specs, and what to do where it is not.

Each check returns (ok, what was found, how to fix it). Ray, MLflow and torch are imported inside
the checks, so one broken package shows up as one failed line, not as a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True


def _python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, sys.version.split()[0], "" if ok else "use Python 3.11 or newer")


def _torch() -> Check:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        return Check("torch", False, f"not importable ({exc})", "pip install torch==2.13.0 (CPU) or your CUDA build")
    device = f"CUDA x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU only"
    return Check("torch", True, f"{torch.__version__}, {device}, {torch.get_num_threads()} threads")


def _package(name: str, fix: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        return Check(name, False, f"not importable ({exc})", fix)
    return Check(name, True, getattr(module, "__version__", "installed"))


def _mlflow_store() -> Check:
    from mvplatform.errors import MvpError
    from tracking.store import check_store, resolve_tracking_uri

    uri = resolve_tracking_uri()
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///")).resolve()
        if not database.exists():  # checked without creating it
            ok = os.access(database.parent, os.W_OK)
            return Check("mlflow store", ok, f"{uri} ({'will be created' if ok else 'folder not writable'})",
                         "" if ok else "run mvp from a writable folder or set MLFLOW_TRACKING_URI")
    try:
        check_store(uri)
    except MvpError as exc:
        return Check("mlflow store", False, str(exc), "fix MLFLOW_TRACKING_URI or start the server")
    return Check("mlflow store", True, uri)


def _packaged_models() -> list[Check]:
    from mvplatform.models import PACKAGED, converted_dir

    checks = []
    for alias, packaged in PACKAGED.items():
        if importlib.util.find_spec(packaged.module) is None:
            checks.append(Check(f"model {alias}", False, "package not installed", packaged.pip_install,
                                required=alias == "gemma3-270m"))
            continue
        converted = converted_dir(alias).exists()
        checks.append(Check(f"model {alias}", True,
                            "installed, converted" if converted else "installed, not converted yet (first use takes ~2 min)"))
    return checks


def _uriel() -> Check:
    from mvplatform.errors import DataError
    from mvplatform.linguistics import _data_dir

    try:
        return Check("URIEL data (lang2vec)", True, str(_data_dir()))
    except DataError as exc:
        return Check("URIEL data (lang2vec)", False, str(exc), "pip install lang2vec")


def _builtin_data() -> Check:
    from mvplatform.data import builtin_root

    files = list((builtin_root() / "values").glob("*/*.json"))
    return Check("built-in data", len(files) >= 112, f"{len(files)} concept files in {builtin_root()}",
                 "" if len(files) >= 112 else "reinstall: pip install -e .")


def _results_dir() -> Check:
    folder = Path("mvp-results").resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # checked without creating it
    ok = os.access(existing, os.W_OK)
    return Check("results dir", ok, f"{folder} ({'writable' if ok else 'not writable'})",
                 "" if ok else "run from a writable folder or set results.dir in the spec")


def _chromium() -> Check:
    import shutil

    path = shutil.which("chromium")
    return Check("chromium (browser tests only)", path is not None, path or "not found",
                 "apt-get install chromium; pip install -e '.[browser]'", required=False)


def run_checks() -> list[Check]:
    checks = [_python(), _torch(),
              _package("transformers", "pip install -e ."), _package("ray", "pip install -e ."),
              _package("mlflow", "pip install -e ."), _package("optuna", "pip install -e ."),
              _mlflow_store(), *_packaged_models(), _uriel(), _builtin_data(), _results_dir(), _chromium()]
    return checks
