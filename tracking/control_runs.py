"""MLflow runs of the control stage: a run per study (every trial), a run per mode (every generation
and verdict, so a person can audit the judge), and a control summary (Table 2, curves).

Runs are children of the submission's parent run, tagged ``step`` = ``search`` / ``control-mode`` /
``control``; under a resumed parent a FINISHED run is not logged twice.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag

from mvplatform.control import MODE_LABELS, LanguageEvaluation
from mvplatform.figures import control_curves_figure, table2, table2_figure, table2_text
from mvplatform.search import StudyResult, TrialRecord, trial_table
from mvplatform.spec import ControlSpec
from mvplatform.uncertainty import PairedTest, mcnemar, wilson
from tracking.runs import SubmissionTracker, _now


class ControlTracker:
    """Logs one model's control results through the submission's tracker (same client and parent)."""

    def __init__(self, tracker: SubmissionTracker, model: str, control: ControlSpec, n_layers: int) -> None:
        self.tracker, self.model, self.control, self.n_layers = tracker, model, control, n_layers
        self.client = tracker.client
        self.summary_rows: list[dict[str, object]] = []

    def _run(self, step: str, name: str, language: str | None, extra: dict[str, str]) -> str | None:
        tracker = self.tracker
        if tracker.existing(step, self.model, self.control.concept, language) is not None:
            return None
        tags = tracker.child_tags(model=self.model, concept=self.control.concept, step=step, **extra)
        if language is not None:
            tags["language"] = language
        return self.client.create_run(tracker.experiment_id, run_name=name, tags=tags).info.run_id

    def log_study(self, result: StudyResult, storage_path: str | None = None) -> str | None:
        """Every trial as a step of the trial metrics, the best setting, the trial table and plots."""
        search = self.control.search
        name = f"{self.model} / {self.control.concept} / {result.language} / search"
        run_id = self._run("search", name, result.language, {"study": result.study_name})
        if run_id is None:
            return None
        now = _now()
        metrics = []
        for r in result.trials:
            if r.following_rate is not None:
                metrics.append(Metric("trial_following_rate", r.following_rate, now, r.number))
            if r.harmless_rate is not None:
                metrics.append(Metric("trial_harmless_rate", r.harmless_rate, now, r.number))
            metrics += [Metric("trial_start", r.setting.start, now, r.number),
                        Metric("trial_width", r.setting.width, now, r.number),
                        Metric("trial_strength", r.setting.strength, now, r.number)]
        metrics += [Metric("baseline_following_rate", result.baseline_following, now, 0),
                    Metric("trials", len(result.trials), now, 0),
                    Metric("trials_resumed", result.resumed_trials, now, 0),
                    Metric("trials_pruned", sum(r.state == "PRUNED" for r in result.trials), now, 0),
                    Metric("rows_generated", result.rows_generated, now, 0),
                    Metric("search_seconds", result.seconds, now, 0)]
        if result.baseline_harmless is not None:
            metrics.append(Metric("baseline_harmless_rate", result.baseline_harmless, now, 0))
        if result.best is not None:
            best = result.best
            metrics += [Metric("best_following_rate", best.following_rate, now, 0),
                        Metric("best_start", best.setting.start, now, 0),
                        Metric("best_width", best.setting.width, now, 0),
                        Metric("best_strength", best.setting.strength, now, 0)]
            if best.harmless_rate is not None:
                metrics.append(Metric("best_harmless_rate", best.harmless_rate, now, 0))
        metrics += [Metric(f"importance_{k}", v, now, 0) for k, v in result.importances.items()]
        params = [Param("sampler", search.sampler), Param("trials_target", str(search.trials)),
                  Param("trials_per_batch", str(search.trials_per_batch)),
                  Param("objective", f"{search.objective.direction} {search.objective.metric}"),
                  Param("guard", "none" if search.guard is None else
                        f"{search.guard.metric} >= {search.guard.min_relative} x unsteered ({search.guard.use})"),
                  Param("operator", self.control.operator), Param("scale", self.control.scale),
                  Param("language", result.language)]
        best_text = result.best.setting.describe(self.n_layers) if result.best else "no feasible setting"
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000],
                                  params=params if start == 0 else [],
                                  tags=[RunTag("best", best_text)] if start == 0 else [])
        front = pareto_front(result.trials, result.direction) if self._multi_objective() else []
        if front:  # a multi-objective study (guard.use: objective): its Pareto front, as metrics and a table
            pareto = [Metric("pareto_trials", len(front), now, 0)]
            for r in front:  # step = trial number, as the trial_* metrics
                pareto += [Metric("pareto_following_rate", r.following_rate, now, r.number),
                           Metric("pareto_harmless_rate", r.harmless_rate, now, r.number),
                           Metric("pareto_strength", r.setting.strength, now, r.number)]
            self.client.log_batch(run_id, metrics=pareto,
                                  tags=[RunTag("pareto_front", ",".join(str(r.number) for r in front))])
            rows = [row for row in trial_table(result) if row["trial"] in {r.number for r in front}]
            self.client.log_table(run_id, {key: [row[key] for row in rows] for key in rows[0]}, "pareto_front.json")
        with self.tracker._staging() as folder:
            (folder / "trials.json").write_text(json.dumps(trial_table(result), indent=1))
            self._optuna_plots(result, storage_path, folder)
            self.client.log_artifacts(run_id, str(folder))
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def _multi_objective(self) -> bool:
        guard = self.control.search.guard
        return guard is not None and guard.use == "objective"

    def _optuna_plots(self, result: StudyResult, storage_path: str | None, folder: Path) -> None:
        """Optuna's own history and importance plots, read back from the study's journal."""
        if storage_path is None or not Path(storage_path).exists():
            return  # e.g. a cluster without a shared result store: trials.json still holds everything
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from optuna.visualization import matplotlib as optuna_plots

        study = optuna.load_study(study_name=result.study_name,
                                  storage=JournalStorage(JournalFileBackend(storage_path)))
        multi = len(study.directions) > 1
        plots = {"optimization_history.png": lambda: optuna_plots.plot_optimization_history(
                     study, target=(lambda t: t.values[0]) if multi else None, target_name="following rate"),
                 "param_importances.png": lambda: optuna_plots.plot_param_importances(
                     study, target=(lambda t: t.values[0]) if multi else None, target_name="following rate")}
        if multi:
            plots["pareto_front.png"] = lambda: optuna_plots.plot_pareto_front(
                study, target_names=["following rate", "harmless rate"])
        for file, plot in plots.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    axis = plot()
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials, or no variance
                continue
            figure = axis.figure if hasattr(axis, "figure") else axis.flat[0].figure
            figure.set_size_inches(7, 4.2)
            self.tracker._save_figure(figure, folder / file)

    def log_language(self, evaluation: LanguageEvaluation) -> None:
        """A run per mode of this language: rate, setting, and the generations with the judge's verdicts."""
        for mode, (task, result) in evaluation.modes.items():
            name = f"{self.model} / {self.control.concept} / {evaluation.language} / {MODE_LABELS[mode]}"
            run_id = self._run("control-mode", name, evaluation.language, {"mode": mode})
            if run_id is None:
                continue
            now = _now()
            metrics = [Metric("following_rate", result.rate, now, 0),
                       Metric("instructions", len(result.verdicts), now, 0)]
            low, high = wilson(sum(v.followed for v in result.verdicts), max(1, len(result.verdicts)))
            metrics += [Metric("following_rate_ci_low", float(low), now, 0),
                        Metric("following_rate_ci_high", float(high), now, 0)]
            for label in ("refused", "degenerate"):
                metrics.append(Metric(f"{label}_rate", sum(v.label == label for v in result.verdicts)
                                      / max(1, len(result.verdicts)), now, 0))
            setting = task.setting
            tags = [RunTag("setting", setting.describe(self.n_layers) if setting else "unsteered"),
                    RunTag("vectors_from", task.vectors_from or "-")]
            if task.note:
                tags.append(RunTag("note", task.note))
            if setting is not None:
                metrics += [Metric("start", setting.start, now, 0), Metric("width", setting.width, now, 0),
                            Metric("strength", setting.strength, now, 0)]
            self.client.log_batch(run_id, metrics=metrics, params=[Param("mode", mode)], tags=tags)
            self.client.log_table(run_id, {
                "instruction": result.instructions, "response": result.responses,
                "verdict": [v.label for v in result.verdicts], "reason": [v.reason for v in result.verdicts]},
                artifact_file="generations.json")
            self.client.set_terminated(run_id, "FINISHED")

    def log_summary(self, evaluations: list[LanguageEvaluation], studies: dict[str, StudyResult]) -> dict[str, object]:
        """Table 2 (rows = modes, columns = languages + Avg) and the curves, on a control run and the parent."""
        languages = [e.language for e in evaluations]
        rates = {(mode, e.language): result.rate for e in evaluations for mode, (_, result) in e.modes.items()}
        rows = table2(rates, self.control.modes, languages)
        markdown, csv_text = table2_text(rows, languages)
        curves = {e.language: e.curve for e in evaluations if e.curve}
        title = f"{self.model} / {self.control.concept}"
        name = f"{title} / control"
        run_id = self._run("control", name, None, {"languages": ",".join(languages)})
        with self.tracker._staging() as folder:
            (folder / "table2.md").write_text(f"# Following rate (%), {title}\n\n" + markdown)
            (folder / "table2.csv").write_text(csv_text)
            (folder / "table2.json").write_text(json.dumps(rows, indent=1))
            intervals_md, tests = following_intervals(evaluations)
            (folder / "table2_intervals.md").write_text(f"# Following rate, {title}: intervals and paired tests\n\n"
                                                        + intervals_md)
            (folder / "best_settings.json").write_text(json.dumps(
                {lang: None if s.best is None else {"start": s.best.setting.start, "width": s.best.setting.width,
                                                    "strength": s.best.setting.strength,
                                                    "layers": s.best.setting.layers(self.n_layers),
                                                    "search_following_rate": s.best.following_rate}
                 for lang, s in studies.items()}, indent=1))
            self.tracker._save_figure(table2_figure(rows, languages, f"{title}: following rate by mode"),
                                      folder / "table2.png")
            if curves:
                self.tracker._save_figure(control_curves_figure(curves, f"{title}: following rate vs strength"),
                                          folder / "strength_curves.png")
            if run_id is not None:
                now = _now()
                metrics = [Metric(f"avg_{mode}", float(row["Avg"]), now, 0)
                           for mode, row in zip(self.control.modes, rows) if row["Avg"] is not None]
                for where, test in tests.items():  # LS- vs En-Control, paired over instructions (issue 16)
                    metrics += [Metric(f"ls_vs_en_{where}_difference", test.difference.point, now, 0),
                                Metric(f"ls_vs_en_{where}_difference_ci_low", test.difference.low, now, 0),
                                Metric(f"ls_vs_en_{where}_difference_ci_high", test.difference.high, now, 0),
                                Metric(f"ls_vs_en_{where}_p", test.p, now, 0)]
                self.client.log_batch(run_id, metrics=metrics)
                self.client.log_artifacts(run_id, str(folder))
                self.client.set_terminated(run_id, "FINISHED")
            self.client.log_artifacts(self.tracker.parent_id, str(folder),
                                      artifact_path=f"summary/control/{self.model}")
        return {"rows": rows, "markdown": markdown}


def pareto_front(trials: list[TrialRecord], direction: str) -> list[TrialRecord]:
    """The completed trials no other trial beats on both objectives, in trial order.

    The objectives of a multi-objective study: the following rate (``direction``) and the harmless
    rate (maximised). A trial is dominated when another is at least as good on both and better on one.

    >>> from mvplatform.control import Setting
    >>> t = lambda n, f, h: TrialRecord(n, Setting(1, 1, 0.5), f, h, "COMPLETE", True)
    >>> [r.number for r in pareto_front([t(0, 0.2, 0.5), t(1, 0.4, 0.9), t(2, 0.3, 0.4), t(3, 0.2, 0.5)], "minimize")]
    [0, 1, 3]
    """
    sign = 1.0 if direction == "minimize" else -1.0
    scored = [(r, (sign * r.following_rate, -r.harmless_rate)) for r in trials
              if r.state == "COMPLETE" and r.following_rate is not None and r.harmless_rate is not None]

    def dominated(point: tuple[float, float]) -> bool:
        return any(other[0] <= point[0] and other[1] <= point[1] and other != point for _, other in scored)

    return [r for r, point in scored if not dominated(point)]


def following_intervals(evaluations: list[LanguageEvaluation]) -> tuple[str, dict[str, PairedTest]]:
    """Table 2 with Wilson intervals, and LS- vs En-Control paired over the same instructions (issue 16).

    Returns the markdown and the tests by language (plus ``all``: every language's instructions
    pooled). A test needs both modes on the same instructions; languages without them are left out.
    """
    lines = ["| language | mode | following | 95% interval | instructions |", "|---|---|---|---|---|"]
    tests: dict[str, PairedTest] = {}
    pooled: list[tuple[list[bool], list[bool]]] = []
    for evaluation in evaluations:
        for mode, (_, result) in evaluation.modes.items():
            followed = sum(v.followed for v in result.verdicts)
            n = len(result.verdicts)
            if n:
                low, high = wilson(followed, n)
                lines.append(f"| {evaluation.language} | {MODE_LABELS[mode]} | {100 * followed / n:.1f} | "
                             f"{100 * float(low):.1f}–{100 * float(high):.1f} | {n} |")
        ls, en = evaluation.modes.get("language_specific"), evaluation.modes.get("english_source")
        if ls is not None and en is not None and ls[1].instructions == en[1].instructions and ls[1].verdicts:
            a, b = [v.followed for v in ls[1].verdicts], [v.followed for v in en[1].verdicts]
            tests[evaluation.language] = mcnemar(np.array(a), np.array(b))
            pooled.append((a, b))
    if len(pooled) > 1:
        tests["all"] = mcnemar(np.array([x for a, _ in pooled for x in a]), np.array([x for _, b in pooled for x in b]))
    if tests:
        lines += ["", "LS- vs En-Control on the same instructions (exact McNemar test; difference in points, paired "
                  "bootstrap 95% interval):", "", "| language | LS - En | 95% interval | only LS | only En | p |",
                  "|---|---|---|---|---|---|"]
        for where, t in tests.items():
            d = t.difference
            lines.append(f"| {where} | {100 * d.point:+.1f} | {100 * d.low:+.1f} to {100 * d.high:+.1f} | {t.only_a} | "
                         f"{t.only_b} | {t.p:.3g} |")
    return "\n".join(lines) + "\n", tests
