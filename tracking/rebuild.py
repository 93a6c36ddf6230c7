"""Reports rebuilt from what MLflow holds: no model, no state cache, just the runs.

``mvp report RUN`` reads a submission's vectors and accuracy curves (and, when transferability is to
be recomputed, its test-split states), recomputes the cross-lingual analyses and writes the same
tables and figures a submission writes. A finished submission's parent holds every cell's vectors
and ``accuracy.json`` in one ``cells.zip`` (:func:`tracking.runs.write_cells`), the same bytes as its
child runs: one download, where reading each child run took three requests (issue 18: a report over
1000 runs). A submission without it (interrupted, or logged before it existed) is read run by run,
a few runs at a time.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from safetensors.numpy import load_file

from mvplatform.concepts import ConceptVectors
from mvplatform.crosslingual import ConceptAnalysis, analyse_concept
from mvplatform.errors import TrackingError
from mvplatform.extraction import Evidence, ExtractionResult
from mvplatform.figures import write_summary
from mvplatform.spec import Spec
from tracking.readback import children, find_submission, submission_spec

CELLS_ARTIFACT = "cells.zip"  # = tracking.runs.CELLS_ARTIFACT (runs imports matplotlib; this module need not)
READERS = 8  # child runs read at once when the parent has no cells.zip


def needs_states(spec: Spec) -> bool:
    """Whether the report recomputes transferability, the one analysis that reads the test-split states."""
    return "transferability" in spec.cross_lingual and spec.tracking.log_states


def _result(tags: dict[str, str], n_train: int, vectors: ConceptVectors, curves: dict,
            states: dict[str, np.ndarray] | None) -> ExtractionResult:
    if states is not None:
        pos, neg = states["pos"].astype(np.float32), states["neg"].astype(np.float32)
    else:
        pos = neg = np.zeros((0, len(vectors.layers), vectors.directions.shape[1]), dtype=np.float32)
    train = curves.get("train_accuracy")
    evidence = Evidence.from_json(curves["evidence"]) if curves.get("evidence") else None
    return ExtractionResult(tags["model"], tags["concept"], tags["language"], vectors, np.asarray(curves["accuracy"]),
                            pos, neg, n_train, 0.0, tags.get("states") == "cached",
                            None if train is None else np.asarray(train), evidence)


def _read_run(client: MlflowClient, run: Run, folder: Path, states: bool) -> ExtractionResult:
    """One extraction child run back from its own artifacts."""
    folder.mkdir()
    run_id = run.info.run_id
    vectors = ConceptVectors.load(client.download_artifacts(run_id, "vectors.safetensors", str(folder)))
    curves = json.loads(Path(client.download_artifacts(run_id, "accuracy.json", str(folder))).read_text())
    logged = None
    if states:
        try:
            logged = load_file(client.download_artifacts(run_id, "test_states.safetensors", str(folder)))
        except (MlflowException, OSError):
            logged = None  # a run without states: transfer is left out, as for any such run
    return _result(run.data.tags, int(run.data.metrics.get("n_train", 0)), vectors, curves, logged)


def _read_cells(client: MlflowClient, parent: Run, folder: Path) -> list[tuple[dict, ConceptVectors, dict]] | None:
    """(tags, vectors, accuracy.json) of every cell from the parent's cells.zip; None when it has none."""
    try:
        path = client.download_artifacts(parent.info.run_id, CELLS_ARTIFACT, str(folder))
    except (MlflowException, OSError):
        return None
    with zipfile.ZipFile(path) as bundle:
        bundle.extractall(folder / "cells")
    cells = []
    for entry in json.loads((folder / "cells" / "index.json").read_text()):
        cell = folder / "cells" / entry["folder"]
        cells.append((entry, ConceptVectors.load(cell / "vectors.safetensors"),
                      json.loads((cell / "accuracy.json").read_text())))
    return cells


def load_results(client: MlflowClient, parent: Run, states: bool = True) -> list[ExtractionResult]:
    """Each finished extraction child run back as an :class:`ExtractionResult`.

    ``states``: read the test-split states too (only transferability needs them).
    """
    with tempfile.TemporaryDirectory(prefix="mvp-report-") as tmp:
        cells = _read_cells(client, parent, Path(tmp))
        if cells is not None and not states:
            return [_result(entry, int(entry["n_train"]), vectors, curves, None) for entry, vectors, curves in cells]
        runs = children(client, parent, "extract")
        with ThreadPoolExecutor(READERS) as pool:
            if cells is None:
                return list(pool.map(lambda run: _read_run(client, run, Path(tmp) / run.info.run_id, states), runs))
            by_cell = {(r.data.tags["model"], r.data.tags["concept"], r.data.tags["language"]): r for r in runs}

            def with_states(cell: tuple[dict, ConceptVectors, dict]) -> ExtractionResult:
                entry, vectors, curves = cell
                run = by_cell[(entry["model"], entry["concept"], entry["language"])]
                folder = Path(tmp) / run.info.run_id
                folder.mkdir()
                try:
                    logged = load_file(client.download_artifacts(run.info.run_id, "test_states.safetensors",
                                                                 str(folder)))
                except (MlflowException, OSError):
                    logged = None
                return _result(entry, int(entry["n_train"]), vectors, curves, logged)

            return list(pool.map(with_states, cells))


def recompute_analyses(results: list[ExtractionResult], spec: Spec) -> list[ConceptAnalysis]:
    cross = spec.cross_lingual
    if not all(r.n_test for r in results):  # states not logged: transfer cannot be recomputed
        cross = [a for a in cross if a != "transferability"]
    grouped: dict[tuple[str, str], list[ExtractionResult]] = defaultdict(list)
    for result in results:
        grouped[(result.model, result.concept)].append(result)
    return [analyse_concept(group, cross, spec.analysis_for(group[0].model)) for group in grouped.values()
            if cross and len(group) >= 2]


def report(client: MlflowClient, ref: str, out_dir: Path, log: bool = True) -> list[Path]:
    """Regenerate a submission's tables and figures into ``out_dir`` (and under ``report/`` of its run)."""
    parent = find_submission(client, ref)
    spec = submission_spec(client, parent)
    results = load_results(client, parent, states=needs_states(spec))
    if not results:
        raise TrackingError(f"submission {parent.info.run_id} has no finished extraction runs to report on")
    files = write_summary(out_dir, results, recompute_analyses(results, spec))
    if log:
        client.log_artifacts(parent.info.run_id, str(out_dir), artifact_path="report")
    return files
