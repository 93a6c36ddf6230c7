"""Issue 18 (scale): extraction runs written in the background, status and report paging through every run,
and the parent's cells.zip giving mvp report the same cells as the child runs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mvplatform.concepts import ConceptVectors
from mvplatform.extraction import ExtractionResult
from mvplatform.spec import Spec
from tracking import readback
from tracking.readback import children, find_submission, submission_status
from tracking.rebuild import _read_run, load_results
from tracking.runs import CELLS_ARTIFACT, SubmissionTracker
from tracking.writer import BackgroundWriter

LANGUAGES = ("en", "fr", "zh", "ja", "ko")


def result(language: str, seed: int) -> ExtractionResult:
    rng = np.random.default_rng(seed)
    vectors = ConceptVectors([1, 2], rng.normal(size=(2, 4)).astype(np.float32), "cluster_mean")
    return ExtractionResult("m", "morality", language, vectors, np.array([0.5, 0.75]), np.zeros((3, 2, 4)),
                            np.zeros((3, 2, 4)), 12, 0.25, cached=seed % 2 == 1,
                            train_accuracy=np.array([0.6, 0.7]))


def test_writer_raises_a_failed_write_at_drain_and_at_the_next_submit():
    writer = BackgroundWriter(threads=2)
    done = []
    writer.submit(lambda: done.append(1))

    def fail() -> None:
        raise ValueError("store gone")

    writer.submit(fail)
    with pytest.raises(ValueError, match="store gone"):
        writer.drain()
    assert done == [1]
    with pytest.raises(ValueError, match="store gone"):
        writer.submit(lambda: done.append(2))
    assert done == [1]  # refused, not queued
    writer.close()


def test_writer_cancel_drops_writes_not_started():
    writer = BackgroundWriter(threads=1)
    gate, ran = threading.Event(), []
    writer.submit(gate.wait)  # holds the only thread
    for n in range(3):
        writer.submit(lambda n=n: ran.append(n))
    assert writer.pending == 4
    gate.set()
    writer.cancel()
    writer.close()
    assert len(ran) < 3 and writer.pending == 0


@pytest.fixture
def logged(tmp_path, monkeypatch):
    """Five extraction runs (one more written as FAILED) of one submission in a SQLite store; pages of 2 runs."""
    monkeypatch.setattr(readback, "PAGE", 2)  # 5 runs: three pages, so a cap at one page would show
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = Spec.model_validate({"name": "scale", "data": {"concepts": ["morality"], "languages": list(LANGUAGES)},
                                "analyses": ["recognition"]})
    tracker = SubmissionTracker(client, spec)
    tracker.start(len(LANGUAGES) + 1)
    results = [result(language, seed) for seed, language in enumerate(LANGUAGES)]
    for r in results:
        tracker.log_extraction(r)
    tracker.log_failure("m / morality / sw", {"model": "m", "concept": "morality", "language": "sw"}, "boom")
    tracker.finish({"m / morality / sw": "boom"})
    return client, tracker.parent_id, results, tmp_path


def test_every_extraction_run_is_written_and_counted(logged):
    client, parent_id, results, _ = logged
    parent = client.get_run(parent_id)
    runs = children(client, parent, "extract")
    assert sorted(r.data.tags["language"] for r in runs) == sorted(LANGUAGES)  # all three pages
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.tags["items_done"] == "5" and parent.data.tags["items_failed"] == "1"
    assert parent.data.tags["items_total"] == "6"
    status = submission_status(client, parent)
    assert (status.items_done, status.items_total) == (5, 6)
    assert status.failures == {"m / morality / sw": "boom"}
    # only 6 items: each run keeps its own figure (ITEM_FIGURES_UP_TO)
    names = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"vectors.safetensors", "accuracy.json", "test_states.safetensors", "accuracy_per_layer.png"} <= names


def test_status_pages_when_the_progress_tags_are_missing(logged):
    client, parent_id, _, _ = logged
    client.delete_tag(parent_id, "items_done")
    status = submission_status(client, find_submission(client, parent_id))
    assert status.items_done == 5  # counted over three pages of FINISHED extraction runs


def test_report_cells_from_the_parent_bundle_equal_the_child_runs(logged):
    client, parent_id, results, tmp_path = logged
    parent = client.get_run(parent_id)
    assert CELLS_ARTIFACT in {a.path for a in client.list_artifacts(parent_id)}
    bundled = {r.language: r for r in load_results(client, parent, states=False)}
    assert sorted(bundled) == sorted(LANGUAGES)
    for i, run in enumerate(children(client, parent, "extract")):
        own = _read_run(client, run, tmp_path / f"run{i}", states=True)
        cell = bundled[own.language]
        np.testing.assert_array_equal(cell.vectors.directions, own.vectors.directions)
        assert cell.vectors.layers == own.vectors.layers == [1, 2]
        np.testing.assert_array_equal(cell.accuracy, own.accuracy)
        np.testing.assert_array_equal(cell.train_accuracy, own.train_accuracy)
        assert (cell.n_train, cell.cached) == (own.n_train, own.cached) == (12, own.language in ("fr", "ja"))
        assert own.n_test == 3 and cell.n_test == 0  # states read only when asked for
    with_states = load_results(client, parent, states=True)
    assert sorted(r.n_test for r in with_states) == [3] * 5
