"""A Ray actor that loads one model once and computes hidden states for every item given to it.

Each process start of a worker is counted in a :class:`LoadCounter` on the driver's node, so a
worker reports its own model loads (1 + the restarts Ray made after its process died).

Test-only fault hooks, read from the environment in the worker process (the driver forwards every
``MVP_FAULT_*`` variable through Ray's runtime_env):

- ``MVP_FAULT_SLOW_SECONDS=S``: sleep S seconds before each item, so a test can interrupt a run midway.
- ``MVP_FAULT_KILL_ONCE=PATH``: when PATH does not exist yet, create it and kill this worker process
  (``os._exit(1)``) in the middle of an item, as a segfault or the kernel's OOM killer would. Ray then
  restarts the actor (``max_restarts``, loading the model again) and retries the item
  (``max_task_retries``). PATH is created atomically, so of several workers exactly one dies, once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray
import torch

from mvplatform.concepts import ConceptVectors
from mvplatform.control import Controller, ControllerStats, Evaluation, LanguageEvaluation, Setting
from mvplatform.data import PairSplit
from mvplatform.extraction import PairStates, compute_states
from mvplatform.models import LoadedModel, load_model
from mvplatform.spec import ControlSpec, ExtractSpec, ModelSpec
from ray_jobs.control import EvaluationJob, evaluate_settings, make_controller, run_evaluation_job


class ModelWorker:
    """Holds a loaded model: loading costs seconds to minutes, so it is paid once per worker."""

    def __init__(self, model: ModelSpec, cache_dir: str | None, num_threads: int, counter: object | None = None,
                 index: int = 0) -> None:
        torch.set_num_threads(max(1, num_threads))
        self.counter, self.index = counter, index
        if counter is not None:  # before loading: a load that crashes the process counts too
            ray.get(counter.loaded.remote(index))  # type: ignore[attr-defined]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.loaded: LoadedModel = load_model(model, Path(cache_dir) if cache_dir else None)

    def loads(self) -> int:
        """How often this worker loaded its model: 1, plus one per restart after its process died."""
        if self.counter is None:
            return 1
        return int(ray.get(self.counter.count.remote(self.index)))  # type: ignore[attr-defined]

    def describe(self) -> dict[str, object]:
        """Facts the driver checks before sending work (depth, device, process)."""
        return {"n_layers": self.loaded.n_layers, "device": str(self.loaded.device), "pid": os.getpid(),
                "gpu_ids": ray.get_gpu_ids()}

    def states(self, split: PairSplit, extract: ExtractSpec) -> PairStates:
        _fault_hooks()
        return compute_states(self.loaded, split, extract)

    # -- control (PAPER.md section 5): generation and judging run where the model is; the driver
    # -- owns the Optuna studies (ray_jobs/control.py), so this process never touches a study --

    def control_evaluate_settings(self, control: ControlSpec, language: str, instructions: list[str],
                                  settings: list[Setting | None], vectors: ConceptVectors | None
                                  ) -> tuple[list[Evaluation], ControllerStats]:
        """One batch of trials of a driver's study: generated and judged together (trial batching)."""
        return evaluate_settings(self._controller(control), language, instructions, settings, vectors)

    def control_evaluate(self, job: EvaluationJob) -> LanguageEvaluation:
        return run_evaluation_job(self._controller(job.control), job)

    def _controller(self, control: ControlSpec) -> Controller:
        """One controller (and judge, possibly a second model) per control spec, kept between calls."""
        if getattr(self, "_control", None) is None or self._control[0] != control:
            self._control = (control, make_controller(self.loaded, control, self.cache_dir))
        return self._control[1]


def _fault_hooks() -> None:
    slow = os.environ.get("MVP_FAULT_SLOW_SECONDS")
    if slow:
        time.sleep(float(slow))
    kill_once = os.environ.get("MVP_FAULT_KILL_ONCE")
    if kill_once:
        try:
            handle = os.open(kill_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(handle, f"{os.getpid()}\n".encode())
        os.close(handle)
        os._exit(1)


class LoadCounter:
    """Model loads per worker of a pool; it lives on the driver's node, so a lost node does not lose it."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def loaded(self, index: int) -> None:
        self.counts[index] = self.counts.get(index, 0) + 1

    def count(self, index: int) -> int:
        return self.counts.get(index, 0)


RemoteModelWorker = ray.remote(ModelWorker)
RemoteLoadCounter = ray.remote(num_cpus=0)(LoadCounter)
