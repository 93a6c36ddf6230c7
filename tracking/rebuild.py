"""Reports rebuilt from what MLflow holds: no model, no state cache, just the runs.

``mvp report RUN`` downloads a submission's vectors and test-split states, recomputes the
cross-lingual analyses and writes the same tables and figures a submission writes.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from safetensors.numpy import load_file

from mvplatform.concepts import ConceptVectors
from mvplatform.crosslingual import ConceptAnalysis, analyse_concept
from mvplatform.errors import TrackingError
from mvplatform.extraction import Evidence, ExtractionResult
from mvplatform.figures import write_summary
from mvplatform.spec import Spec
from tracking.readback import children, find_submission, submission_spec


def load_results(client: MlflowClient, parent: Run) -> list[ExtractionResult]:
    """Each finished extraction child run back as an :class:`ExtractionResult`."""
    results = []
    with tempfile.TemporaryDirectory(prefix="mvp-report-") as tmp:
        for run in children(client, parent, "extract"):
            folder = Path(tmp) / run.info.run_id
            folder.mkdir()
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            vectors = ConceptVectors.load(client.download_artifacts(run.info.run_id, "vectors.safetensors", str(folder)))
            curves = json.loads(Path(client.download_artifacts(run.info.run_id, "accuracy.json", str(folder)))
                                .read_text())
            train = curves.get("train_accuracy")
            if "test_states.safetensors" in names:
                states = load_file(client.download_artifacts(run.info.run_id, "test_states.safetensors", str(folder)))
                pos, neg = states["pos"].astype(np.float32), states["neg"].astype(np.float32)
            else:
                pos = neg = np.zeros((0, len(vectors.layers), vectors.directions.shape[1]), dtype=np.float32)
            tags = run.data.tags
            evidence = Evidence.from_json(curves["evidence"]) if curves.get("evidence") else None
            results.append(ExtractionResult(tags["model"], tags["concept"], tags["language"], vectors,
                                            np.asarray(curves["accuracy"]), pos, neg,
                                            int(run.data.metrics.get("n_train", 0)), 0.0,
                                            tags.get("states") == "cached", None if train is None else np.asarray(train),
                                            evidence))
    return results


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
    results = load_results(client, parent)
    if not results:
        raise TrackingError(f"submission {parent.info.run_id} has no finished extraction runs to report on")
    files = write_summary(out_dir, results, recompute_analyses(results, submission_spec(client, parent)))
    if log:
        client.log_artifacts(parent.info.run_id, str(out_dir), artifact_path="report")
    return files
