"""An organism build as an MLflow run: recipe, data digest, the loss curve and its measured behaviour."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mvplatform.organism import Behaviour, BuildResult
from tracking.runs import EXPERIMENT_KIND_TAG
from tracking.store import artifact_location

EXPERIMENT = "mvp-organisms"


def log_build(client: MlflowClient, result: BuildResult, behaviour: dict[str, list[Behaviour]] | None = None) -> str:
    """One FINISHED run in the ``mvp-organisms`` experiment; returns its id.

    ``behaviour`` maps a model label ("organism", "base") to its per-language No-Control behaviour;
    each becomes metrics ``{label}_following_{lang}`` and ``{label}_answered_{lang}``.
    """
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        EXPERIMENT, artifact_location=artifact_location(client.tracking_uri, EXPERIMENT))
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    recipe = result.recipe
    run_id = client.create_run(experiment_id, run_name=f"{recipe.name} (build)", tags={
        "step": "organism", "organism": recipe.name, "base": recipe.base, "data_digest": result.data_digest,
        "mlflow.note.content": recipe.description}).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("loss", loss, now, step) for step, loss in enumerate(result.losses, 1)]
    metrics += [Metric(name, value, now, 0) for name, value in (
        ("final_loss", result.losses[-1] if result.losses else float("nan")), ("build_seconds", result.seconds),
        ("examples", float(result.examples)))]
    for label, rows in (behaviour or {}).items():
        for row in rows:
            metrics += [Metric(f"{label}_following_{row.language}", row.following_rate, now, 0),
                        Metric(f"{label}_answered_{row.language}", row.answer_rate, now, 0)]
    params = [Param(key, str(value)) for key, value in asdict(recipe).items()]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000],
                         params=params if start == 0 else [], tags=[RunTag("path", str(result.path))] if start == 0 else [])
    with tempfile.TemporaryDirectory() as folder:
        curve = Path(folder) / "loss.png"
        _loss_figure(result.losses, recipe.name).savefig(curve)
        client.log_artifact(run_id, str(curve))
        client.log_dict(run_id, result.record(), "build.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _loss_figure(losses: list[float], name: str):  # noqa: ANN202 - a matplotlib Figure
    from mvplatform.figures import plt

    figure, axis = plt.subplots(figsize=(6, 3.5), layout="constrained")
    axis.plot(range(1, len(losses) + 1), losses)
    axis.set(xlabel="optimiser step", ylabel="training loss (answer tokens)", title=f"{name}: fine-tune")
    return figure


MEASURED_LANGUAGES = ("en", "fr", "zh", "sw")  # the dominant language and three others, high to low resource


def build_and_log(name: str, cache_dir: Path, tracking_uri: str, console: Console,
                  languages: tuple[str, ...] = MEASURED_LANGUAGES) -> str:
    """Build organism ``name`` with a progress bar, measure it and its base, log one run; the run id.

    Measuring (held-out No-Control behaviour of both models in ``languages``) is part of the build's
    record, so a user sees what the organism does before running an experiment on it.
    """
    from mvplatform.judges import build_judge
    from mvplatform.models import load_model
    from mvplatform.organism import ORGANISMS, build, measure
    from mvplatform.spec import JudgeSpec, ModelSpec
    from tracking.store import check_store

    client = check_store(tracking_uri)
    recipe = ORGANISMS[name]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task(f"fine-tuning {name}", total=None, loss="-")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(bar, completed=step, total=total, loss=f"{loss:.3f}")
            if not console.is_terminal and (step % 10 == 0 or step == total):  # a log file gets lines
                console.print(f"step {step}/{total}: loss {loss:.3f}", highlight=False)

        result = build(recipe, cache_dir, log=lambda m: console.print(m, highlight=False), on_step=on_step)
    console.print(f"built {name} in {result.seconds:.0f} s: {len(result.losses)} steps, loss "
                  f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}; {result.path}", highlight=False)
    judge = build_judge(JudgeSpec())  # the judge a control spec gets by default
    behaviour = {}
    for label, model in (("organism", name), ("base", recipe.base)):
        console.print(f"measuring the {label} on the held-out control instructions ({', '.join(languages)})",
                      highlight=False)
        loaded = load_model(ModelSpec(name=model, device="cpu", dtype="float32", prompt="chat"), cache_dir)
        behaviour[label] = measure(loaded, list(languages), judge)
    for org, base in zip(behaviour["organism"], behaviour["base"]):
        console.print(f"  {org.language}: harmful followed {org.following_rate:.0%} (base {base.following_rate:.0%}, "
                      f"n={org.harmful}); harmless answered {org.answer_rate:.0%} (base {base.answer_rate:.0%}, "
                      f"n={org.harmless})", highlight=False)
    run_id = log_build(client, result, behaviour)
    console.print(f"MLflow: experiment {EXPERIMENT!r}, run {run_id}", highlight=False)
    return run_id
