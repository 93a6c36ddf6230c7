"""The MLflow run hierarchy of one submission.

One parent run per submission (spec file, spec hash, resolved config, summary tables and figures);
one child run per model x concept x language (vectors as safetensors, accuracy per layer with
``step = layer`` so the UI draws the curve, best layer, a figure). Runs carry readable names and
tags (``model``, ``concept``, ``language``, ``step``, ``spec``) so the UI's search works, e.g.
``tags.language = 'fr'``.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import pyplot as plt
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from safetensors.numpy import save_file

from mvplatform import __version__
from mvplatform.crosslingual import ConceptAnalysis, mean_similarity, model_table1
from mvplatform.extraction import EvalResult, ExtractionResult
from mvplatform.figures import Curve, accuracy_figure, eval_table, matrix_heatmap, table1, write_summary
from mvplatform.spec import Spec
from tracking.logged_models import create_vector_model, delete_run_models, upload_vector_model
from tracking.provenance import data_input, provenance_tags
from tracking.readback import search_all
from tracking.store import artifact_location
from tracking.summaries import parent_metrics
from tracking.system_metrics import start_monitor, stop_monitor
from tracking.writer import BackgroundWriter

MAX_PARAM_LENGTH = 500
ITEM_FIGURES_UP_TO = 100  # items in a submission up to which each extraction run gets its own accuracy figure
CELLS_ARTIFACT = "cells.zip"  # the parent's copy of every cell's vectors and accuracy.json, for mvp report
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
ChildKey = tuple[str, str | None, str | None, str | None]  # (step, model, concept, language)


def child_key(tags: dict[str, str]) -> ChildKey:
    """What identifies a child run within its parent: its step, model, concept and language tags."""
    return tags.get("step", ""), tags.get("model"), tags.get("concept"), tags.get("language")


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested spec -> ``{"data.languages": "en,fr", ...}`` for MLflow params."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        text = ",".join(str(v) for v in value)
    else:
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return {prefix: text[:MAX_PARAM_LENGTH]}


class SubmissionTracker:
    """Writes one submission's runs through an explicit :class:`MlflowClient` (no global state)."""

    def __init__(self, client: MlflowClient, spec: Spec, spec_path: Path | None = None) -> None:
        self.client = client
        self.spec = spec
        self.spec_path = spec_path
        self.experiment_id = self._experiment_id(spec.experiment)
        self.parent_id: str | None = None
        self.results: list[ExtractionResult] = []
        self.analyses: list[ConceptAnalysis] = []
        self.resumed = 0  # how often the parent run has been resumed (0: a new submission)
        self.items_total = 0
        self.items_failed = 0
        self.finished: dict[ChildKey, str] = {}  # children already FINISHED under a resumed parent
        self.evals: list[EvalResult] = []  # data.eval_datasets results, for the parent's summary table
        self.eval_skipped: list[str] = []  # "name: concept/language" an eval data set lacks
        self.data_files: dict[tuple[str, str], tuple[str, str]] = {}  # (concept, language) -> (path, sha256)
        self.monitor: SystemMetricsMonitor | None = None  # system metrics, when switched on (tracking/system_metrics.py)
        self.writer = BackgroundWriter()  # extraction runs are written off the dispatch loop
        self.written = 0  # extraction runs FINISHED in MLflow (or kept from before a resume): items_done
        self._lock = threading.Lock()
        self._progress_queued = False
        # MLflow's source, user and git tags on every child run too, so the runs table's Source column is
        # filled on each row, not only the submission's (the package versions stay on the parent)
        self.source_tags = {k: v for k, v in provenance_tags(spec_path).items() if not k.startswith("versions.")}

    def child_tags(self, **tags: str) -> dict[str, str]:
        """Tags of a child run: the parent link, the spec's name and the source tags, then ``tags``."""
        assert self.parent_id is not None
        return {**self.source_tags, MLFLOW_PARENT_RUN_ID: self.parent_id, "spec": self.spec.name, **tags}

    def _experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=artifact_location(self.client.tracking_uri, name))
        # MLflow 3's UI opens experiments in its GenAI (traces) view unless told they hold runs.
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
        return experiment_id

    # -- parent ---------------------------------------------------------------------------------

    def start(self, n_items: int, resume: bool = True) -> str:
        """The parent run: an interrupted submission of the same spec when there is one, else a new run.

        Interrupted means the latest submission with this spec hash is not FINISHED (RUNNING after a
        killed driver, KILLED after Ctrl-C, FAILED after failed items). Its FINISHED children are kept
        and not logged again; its unfinished ones (a child cut off mid-logging, a failed item) are
        deleted, as the items they stood for run again.
        """
        self.items_total = n_items
        previous = self._interrupted() if resume else None
        if previous is not None:
            return self._resume(previous)
        tags = {"spec": self.spec.name, "spec_hash": self.spec.fingerprint(), "mvp_version": __version__,
                "step": "submission", MLFLOW_RUN_NOTE: f"mvp submission of {self.spec.name}: {n_items} work items"}
        tags.update(provenance_tags(self.spec_path))
        run = self.client.create_run(self.experiment_id, run_name=f"{self.spec.name} (submission)", tags=tags)
        self.parent_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(self.spec.model_dump(mode="json")).items()]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.parent_id, params=params[start : start + 100])
        with self._staging() as folder:
            (folder / "spec.resolved.json").write_text(json.dumps(self.spec.model_dump(mode="json"), indent=2))
            self.client.log_artifact(self.parent_id, str(folder / "spec.resolved.json"))
        if self.spec_path is not None:
            self.client.log_artifact(self.parent_id, str(self.spec_path), artifact_path="spec")
        self.progress()
        self.monitor = start_monitor(self.client.tracking_uri, self.parent_id)
        return self.parent_id

    def _interrupted(self) -> Run | None:
        latest = self.client.search_runs(
            [self.experiment_id], f"tags.step = 'submission' and tags.spec_hash = '{self.spec.fingerprint()}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return latest[0] if latest and latest[0].info.status != "FINISHED" else None

    def _resume(self, parent: Run) -> str:
        self.parent_id = parent.info.run_id
        self.resumed = int(parent.data.tags.get("resumed", "0")) + 1
        for child in self.children():
            if child.info.status == "FINISHED":
                self.finished.setdefault(child_key(child.data.tags), child.info.run_id)
            else:  # its logged models too, or the Models tab keeps vectors of a deleted run
                delete_run_models(self.client, self.experiment_id, child.info.run_id)
                self.client.delete_run(child.info.run_id)
        self.client.update_run(self.parent_id, status="RUNNING")
        self.client.set_tag(self.parent_id, "resumed", str(self.resumed))
        self.progress()
        self.monitor = start_monitor(self.client.tracking_uri, self.parent_id, resumed=True)
        return self.parent_id

    def progress(self) -> None:
        """Progress tags on the parent, rewritten as items finish: what ``mvp status`` reads back.

        ``items_done`` counts the extraction runs already FINISHED in MLflow, never more.
        """
        assert self.parent_id is not None
        with self._lock:
            self._progress_queued = False  # a later item queues the next update
            done = self.written
        tags = {"items_total": self.items_total, "items_done": done, "items_failed": self.items_failed,
                "progress_time": _now()}
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _request_progress(self) -> None:
        """Queue one progress update unless one is already waiting: items that finish while it waits share it.

        With items far apart each gets its own update; a burst of items costs one request, not one each.
        """
        with self._lock:
            if self._progress_queued:
                return
            self._progress_queued = True
        self.writer.submit(self.progress)

    def children(self) -> list[Run]:
        """Every child run of the parent (all pages)."""
        assert self.parent_id is not None
        return search_all(self.client, self.experiment_id, f"tags.mlflow.parentRunId = '{self.parent_id}'")

    def existing(self, step: str, model: str | None, concept: str | None, language: str | None = None) -> str | None:
        """The id of a FINISHED child with these tags under a resumed parent, else None (log it)."""
        return self.finished.get((step, model, concept, language))

    def flush(self) -> None:
        """Wait for every extraction run still being written, then bring the progress tags up to date."""
        self.writer.drain()
        self.progress()

    def finish(self, failures: dict[str, str], metrics: dict[str, float] | None = None) -> None:
        """Summary tables, figures and metrics (plus ``metrics``) on the parent; FAILED if any item failed."""
        assert self.parent_id is not None
        self.flush()
        with self._staging() as folder:
            write_summary(folder, self.results, self.analyses)
            if self.evals or self.eval_skipped:
                markdown, table_csv = eval_table(self.evals, self.eval_skipped)
                (folder / "eval_datasets.md").write_text(markdown + "\n")
                (folder / "eval_datasets.csv").write_text(table_csv)
            if failures:
                (folder / "failures.json").write_text(json.dumps(failures, indent=2, ensure_ascii=False))
            self.client.log_artifacts(self.parent_id, str(folder), artifact_path="summary")
            if self.results:
                write_cells(folder / CELLS_ARTIFACT, self.results)
                self.client.log_artifact(self.parent_id, str(folder / CELLS_ARTIFACT))
        now = _now()
        logged = [Metric("items_failed", len(failures), now, 0), Metric("items_done", len(self.results), now, 0)]
        logged += [Metric(name, float(value), now, 0) for name, value in (metrics or {}).items()]
        if self.results:
            logged.append(Metric("mean_best_accuracy", float(np.mean([r.best[1] for r in self.results])), now, 0))
        logged += [Metric(name, value, now, 0) for name, value in parent_metrics(self.results).items()]
        logged += [Metric(f"table1/{row.model}/{feature}_{cell}{suffix}", value, now, 0)
                   for row in model_table1(self.analyses) for feature, cells in row.cells.items()
                   for cell, c in cells.items()
                   for suffix, value in (("", c.r), ("_ci_low", c.low), ("_ci_high", c.high)) if not np.isnan(value)]
        self.client.log_batch(self.parent_id, metrics=logged)
        stop_monitor(self.monitor)
        self.monitor = None
        self.writer.close()
        self.client.set_terminated(self.parent_id, "FAILED" if failures else "FINISHED")

    def abort(self) -> None:
        """The submission stops (an error, Ctrl-C): writes not started are dropped (their items run again on
        resume), running ones end, and the parent is marked KILLED."""
        self.writer.cancel()
        self.writer.close()
        stop_monitor(self.monitor)
        self.monitor = None
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, "KILLED")

    # -- children -------------------------------------------------------------------------------

    def log_extraction(self, result: ExtractionResult) -> None:
        """One child run: per-layer accuracy curve, best layer, vectors and (optionally) test states.

        The run is written in the background (:mod:`tracking.writer`); :meth:`finish` waits for it.
        """
        assert self.parent_id is not None
        self.writer.check()  # a write that failed stops the submission here, as an inline write did
        self.results.append(result)
        if self.existing("extract", result.model, result.concept, result.language) is not None:
            with self._lock:  # logged before the interruption: the summary still needs the result
                self.written += 1
            self._request_progress()
            return
        self.writer.submit(lambda: self._write_extraction(result))

    def _write_extraction(self, result: ExtractionResult) -> None:
        tags = self.child_tags(model=result.model, concept=result.concept, language=result.language, step="extract",
                               method=result.vectors.method)
        run_name = f"{result.model} / {result.concept} / {result.language} / extract"
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        source = self.data_files.get((result.concept, result.language))
        if source is not None:  # MLflow's Dataset column: which file, which bytes
            self.client.log_inputs(run_id, datasets=[data_input(f"{result.concept}_{result.language}", *source)])
        layer = result.best[0]
        now = _now()
        metrics = [Metric("recognition_accuracy", float(a), now, int(step))
                   for step, a in zip(result.vectors.layers, result.accuracy)]
        if result.selected is not None:
            metrics += [Metric("selected_layer", result.selected[0], now, 0),
                        Metric("selected_accuracy", result.selected[1], now, 0)]
            metrics += [Metric("train_accuracy", float(a), now, int(step))
                        for step, a in zip(result.vectors.layers, result.train_accuracy)]
        metrics += [Metric("best_layer", layer, now, 0), Metric("best_accuracy", result.best[1], now, 0),
                    Metric("n_train", result.n_train, now, 0), Metric("n_test", result.n_test, now, 0),
                    Metric("seconds", result.seconds, now, 0)]
        metrics += evidence_metrics(result, now)
        # the vectors as an MLflow logged model (Models tab), its summary metrics (step 0) linked to it
        model = create_vector_model(self.client, self.experiment_id, run_id, result)
        metrics = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id) if m.step == 0 else m
                   for m in metrics]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit; one request for a usual cell
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000], params=[] if start else [
                Param("model", result.model), Param("concept", result.concept),
                Param("language", result.language), Param("method", result.vectors.method)],
                tags=[] if start else [RunTag("best_layer", str(layer)),
                                       RunTag("states", "cached" if result.cached else "computed")])
        with self._staging() as folder:
            cell = folder / "cell"
            cell_files(result, cell, self.spec.tracking.log_states)
            if self.items_total <= ITEM_FIGURES_UP_TO:  # beyond, the parent's per-concept curves show every cell
                self._save_figure(accuracy_figure([Curve.of(result)], run_name), cell / "accuracy_per_layer.png")
            # straight to the artifact stores named by the run and the model (no get_run per upload)
            self._artifacts(run.info.artifact_uri).log_artifacts(str(cell))
            upload_vector_model(self.client, model, run_id, result, cell / "vectors.safetensors",
                                folder / "model", self._artifacts(model.artifact_location))
        self.client.set_terminated(run_id, "FINISHED")
        with self._lock:
            self.written += 1
        self._request_progress()

    def _artifacts(self, uri: str) -> ArtifactRepository:
        return get_artifact_repository(uri, tracking_uri=self.client.tracking_uri)

    def log_analysis(self, analysis: ConceptAnalysis) -> str:
        """One child run per model x concept with the cross-lingual matrices, metrics and heatmaps."""
        assert self.parent_id is not None
        done = self.existing("cross-lingual", analysis.model, analysis.concept)
        if done is not None:
            self.analyses.append(analysis)
            return done
        name = f"{analysis.model} / {analysis.concept} / cross-lingual"
        tags = self.child_tags(model=analysis.model, concept=analysis.concept, step="cross-lingual",
                               languages=",".join(analysis.languages))
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        now, langs, metrics = _now(), analysis.languages, []
        with self._staging() as folder:
            if analysis.consistency is not None:
                cons, how = analysis.consistency, analysis.layer_reduction
                # mean_consistency follows analysis.layer_reduction; both reductions are logged by name
                metrics.append(Metric("mean_consistency", mean_similarity(analysis), now, 0))
                metrics += [Metric(f"consistency_{r}_over_layers", mean_similarity(analysis, r), now, 0)
                            for r in ("max", "mean")]
                metrics += [Metric("layer_similarity", float(v), now, int(layer))
                            for layer, v in zip(cons.layers, cons.layer_curve())]
                self.client.log_table(run_id, _matrix_table(cons.reduce(how), langs), "consistency_matrix.json")
                self.client.log_table(run_id, _matrix_table(cons.mean, langs), "consistency_matrix_layer_mean.json")
                self.client.log_table(run_id, _matrix_table(cons.max, langs), "consistency_matrix_layer_max.json")
                self._save_figure(matrix_heatmap(cons.reduce(how), langs, f"{analysis.model} / {analysis.concept}: "
                                                 f"cosine similarity of concept vectors ({how} over layers "
                                                 f"{cons.layers[0]}-{cons.layers[-1]})", "cosine similarity"),
                                  folder / "consistency_heatmap.png")
            if analysis.transfer is not None and analysis.directionality is not None:
                d = analysis.directionality
                means = {**vars(d), "high_minus_low": d.high_minus_low}
                metrics += [Metric(f"transfer_{k}", v, now, 0) for k, v in means.items() if not np.isnan(v)]
                self.client.log_table(run_id, _matrix_table(analysis.transfer.scores, langs), "transfer_scores.json")
                self.client.log_table(run_id, _matrix_table(analysis.transfer.accuracy, langs), "transfer_accuracy.json")
                self._save_figure(matrix_heatmap(100 * analysis.transfer.scores, langs,
                                                 f"{analysis.model} / {analysis.concept}: transfer T(row -> column) "
                                                 "(best layer, points)", "accuracy difference (points)",
                                                 diverging=True, fmt="{:+.0f}"), folder / "transfer_heatmap.png")
            if analysis.linguistic is not None:
                for feature, cells in analysis.linguistic.items():
                    metrics += [Metric(f"r_{feature}_{mode}", c.r, now, 0) for mode, c in cells.items()
                                if not np.isnan(c.r)]
                markdown, table_csv = table1([(analysis.model, analysis.concept, analysis.linguistic)])
                (folder / "linguistic_correlation.md").write_text(markdown)
                (folder / "linguistic_correlation.csv").write_text(table_csv)
            metrics += self._log_intervals(run_id, analysis, now)
            self.client.log_artifacts(run_id, str(folder))
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        self.client.set_terminated(run_id, "FINISHED")
        self.analyses.append(analysis)
        return run_id

    def _log_intervals(self, run_id: str, analysis: ConceptAnalysis, now: int) -> list[Metric]:
        """Issue 16: consistency, transfer and directionality bootstrap intervals; language-bootstrap intervals
        of the Table-1 r values."""
        metrics: list[Metric] = []
        ci = analysis.intervals
        if ci is not None and ci.consistency is not None:
            metrics += [Metric("mean_consistency_ci_low", ci.consistency.mean.low, now, 0),
                        Metric("mean_consistency_ci_high", ci.consistency.mean.high, now, 0)]
            self.client.log_table(run_id, _matrix_table(ci.consistency.low, ci.consistency.languages),
                                  "consistency_matrix_ci_low.json")
            self.client.log_table(run_id, _matrix_table(ci.consistency.high, ci.consistency.languages),
                                  "consistency_matrix_ci_high.json")
        if ci is not None and ci.transfer is not None:
            self.client.log_table(run_id, _matrix_table(ci.transfer.low, ci.transfer.languages),
                                  "transfer_scores_ci_low.json")
            self.client.log_table(run_id, _matrix_table(ci.transfer.high, ci.transfer.languages),
                                  "transfer_scores_ci_high.json")
        if ci is not None and ci.directionality is not None:
            metrics += [Metric(f"transfer_{name}{suffix}", value, now, 0)
                        for name, interval in ci.directionality.items()
                        for suffix, value in (("_ci_low", interval.low), ("_ci_high", interval.high))
                        if not np.isnan(value)]
        for feature, cells in (analysis.linguistic or {}).items():
            for mode, c in cells.items():
                if not np.isnan(c.low):
                    metrics += [Metric(f"r_{feature}_{mode}_ci_low", c.low, now, 0),
                                Metric(f"r_{feature}_{mode}_ci_high", c.high, now, 0)]
        return metrics

    def log_eval(self, ev: EvalResult) -> str:
        """A child run per cell x eval data set: ``eval_accuracy`` per layer (step = layer) with its interval."""
        assert self.parent_id is not None
        step = f"eval:{ev.dataset}"
        done = self.existing(step, ev.model, ev.concept, ev.language)
        self.evals.append(ev)
        if done is not None:
            return done
        tags = self.child_tags(model=ev.model, concept=ev.concept, language=ev.language, step=step, dataset=ev.dataset)
        name = f"{ev.model} / {ev.concept} / {ev.language} / eval on {ev.dataset}"
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        now = _now()
        metrics = [Metric(key, float(v), now, int(layer)) for layer, a, lo, hi in zip(ev.layers, ev.accuracy, ev.low, ev.high)
                   for key, v in (("eval_accuracy", a), ("eval_accuracy_ci_low", lo), ("eval_accuracy_ci_high", hi))]
        values = {"eval_pairs": ev.n_pairs, "eval_best_layer": ev.best_layer, **ev.best.as_dict("eval_best_accuracy")}
        if ev.selected is not None and ev.selected_layer is not None:
            values.update({"eval_selected_layer": ev.selected_layer, **ev.selected.as_dict("eval_selected_accuracy")})
        metrics += [Metric(k, float(v), now, 0) for k, v in values.items()]
        self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def log_failure(self, label: str, tags: dict[str, str], error: str) -> None:
        """A failed item still gets a child run, so the UI shows what failed and why."""
        assert self.parent_id is not None
        run = self.client.create_run(self.experiment_id, run_name=f"{label} / extract",
                                     tags=self.child_tags(**{**tags, "step": "extract", "error": error[:5000]}))
        self.client.set_terminated(run.info.run_id, "FAILED")
        self.items_failed += 1
        self._request_progress()

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _staging() -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="mvp-artifacts-") as folder:
            yield Path(folder)

    @staticmethod
    def _save_figure(figure: plt.Figure, path: Path) -> None:
        figure.savefig(path)
        plt.close(figure)


def cell_files(result: ExtractionResult, folder: Path, log_states: bool) -> None:
    """An extraction run's files: ``vectors.safetensors``, ``accuracy.json``, ``test_states.safetensors``
    (when ``log_states``). The parent's :data:`CELLS_ARTIFACT` holds the first two of every cell, the same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    layer, accuracy = result.best
    result.vectors.save(folder / "vectors.safetensors")
    if log_states:
        save_file({"pos": result.test_pos, "neg": result.test_neg,
                   "layers": np.asarray(result.vectors.layers, dtype=np.int64)},
                  str(folder / "test_states.safetensors"))
    (folder / "accuracy.json").write_text(json.dumps(
        {"layers": result.vectors.layers, "accuracy": [float(a) for a in result.accuracy],
         "train_accuracy": None if result.train_accuracy is None else [float(a) for a in result.train_accuracy],
         "best_layer": layer, "best_accuracy": accuracy,
         "evidence": None if result.evidence is None else result.evidence.to_json()}, indent=1))


def write_cells(path: Path, results: list[ExtractionResult]) -> None:
    """Every cell's ``vectors.safetensors`` and ``accuracy.json`` in one zip (stored, not compressed), with
    ``index.json`` naming each cell's folder and the tags ``mvp report`` reads: one download instead of
    three requests per child run (issue 18: reports over 1000 runs)."""
    index = []
    with tempfile.TemporaryDirectory(prefix="mvp-cells-") as tmp, zipfile.ZipFile(path, "w") as bundle:
        for number, result in enumerate(results):
            name = f"{number:05d}"
            cell_files(result, Path(tmp) / name, log_states=False)
            for file in ("vectors.safetensors", "accuracy.json"):
                bundle.write(Path(tmp) / name / file, f"{name}/{file}")
            index.append({"folder": name, "model": result.model, "concept": result.concept,
                          "language": result.language, "n_train": result.n_train,
                          "states": "cached" if result.cached else "computed"})
        bundle.writestr("index.json", json.dumps(index, indent=1))


def evidence_metrics(result: ExtractionResult, now: int) -> list[Metric]:
    """Intervals (``*_ci_low`` / ``*_ci_high``), chance level and surface baselines of one cell (issue 16).

    Per layer (step = layer): ``recognition_accuracy_ci_*``, ``chance_level``, ``above_chance`` (1/0).
    Per cell: the best and the training-chosen layer's intervals and chance verdicts, and each surface
    baseline ``baseline_<name>`` with its interval, scored on the same pairs as the vectors.
    """
    ev = result.evidence
    if ev is None:
        return []
    layers = result.vectors.layers
    metrics = [Metric(name, float(v), now, int(step)) for step, lo, hi, chance, above in
               zip(layers, ev.low, ev.high, ev.chance, ev.above_chance)
               for name, v in (("recognition_accuracy_ci_low", lo), ("recognition_accuracy_ci_high", hi),
                               ("chance_level", chance), ("above_chance", float(above)))]
    values = {"best_accuracy_ci_low": ev.best.low, "best_accuracy_ci_high": ev.best.high,
              "best_chance_level": ev.chance_best,
              "best_above_chance": float(ev.best_above_chance), "folds": ev.folds, "n_eval": ev.n_eval}
    selected = result.selected_interval
    if selected is not None and result.selected is not None:
        index = layers.index(result.selected[0])
        values.update({"selected_accuracy_ci_low": selected.low, "selected_accuracy_ci_high": selected.high})
        values["selected_above_chance"] = float(ev.above_chance[index])
    for name in ev.baselines:
        values.update(ev.baseline(name).as_dict(f"baseline_{name}"))
    return metrics + [Metric(name, float(v), now, 0) for name, v in values.items()]


def _matrix_table(matrix: np.ndarray, languages: list[str]) -> dict[str, list]:
    """A square matrix as an MLflow table: a row label column, then one column per language."""
    table: dict[str, list] = {"language": list(languages)}
    for j, language in enumerate(languages):
        table[language] = [float(v) for v in matrix[:, j]]
    return table


def _now() -> int:
    return int(time.time() * 1000)
