"""A submission's concept vectors read back from MLflow for ``mvp export`` (no model, no Ray).

Each finished extraction child run holds its cell's ``vectors.safetensors``; only the cells asked
for are downloaded. The scale the files are written at defaults to the one the submission's spec
steers with (``control.scale``, else ``state_norm``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from mvplatform.concepts import ConceptVectors
from mvplatform.errors import TrackingError
from mvplatform.export import CellVectors
from mvplatform.spec import Spec
from tracking.readback import children, find_submission, submission_spec


def submission_vectors(client: MlflowClient, run_id: str, models: list[str] | None = None,
                       concepts: list[str] | None = None,
                       languages: list[str] | None = None) -> tuple[list[CellVectors], Spec]:
    """The cells of a submission (a parent run id) that pass the filters, and the submission's spec."""
    parent = find_submission(client, run_id)
    runs = [r for r in children(client, parent, "extract")
            if (not models or r.data.tags.get("model") in models)
            and (not concepts or r.data.tags.get("concept") in concepts)
            and (not languages or r.data.tags.get("language") in languages)]
    if not runs:
        asked = "; ".join(f"{name} {', '.join(values)}" for name, values in
                          (("model", models), ("concept", concepts), ("language", languages)) if values)
        raise TrackingError(f"submission {parent.info.run_id} has no finished extraction run"
                            f"{' for ' + asked if asked else ''}; `mvp status {parent.info.run_id}` lists its cells")
    spec = submission_spec(client, parent)
    cells = []
    with tempfile.TemporaryDirectory(prefix="mvp-export-") as tmp:
        for run in sorted(runs, key=lambda r: (r.data.tags["model"], r.data.tags["concept"], r.data.tags["language"])):
            tags = run.data.tags
            folder = Path(tmp) / run.info.run_id
            folder.mkdir()
            vectors = ConceptVectors.load(client.download_artifacts(run.info.run_id, "vectors.safetensors",
                                                                    str(folder)))
            cells.append(CellVectors(tags["model"], tags["concept"], tags["language"], vectors,
                                     f"mlflow run {run.info.run_id}",
                                     {"parent_run": parent.info.run_id, "spec": tags.get("spec", ""),
                                      "read": spec.extract.read}))
    return cells, spec
