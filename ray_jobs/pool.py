"""The model-holding actors of one model: started on first need, sized from the model, killed on exit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mvplatform.errors import MvpError
from mvplatform.models import PACKAGED, converted_dir, model_location, parameter_count
from mvplatform.organism import ORGANISMS
from mvplatform.spec import ModelSpec, Spec
from ray_jobs.resources import WorkerRequest, worker_memory
from ray_jobs.worker import RemoteLoadCounter, RemoteModelWorker

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def model_memory(model: ModelSpec, cache_dir: Path | None, on_gpu: bool) -> int:
    """Host memory per worker from the model's parameter count (config only, no weights); 0 when unknown.

    Packaged models not yet converted and organisms not yet built are left at 0 rather than
    converted or built here.
    """
    if model.name in PACKAGED and not converted_dir(model.name, cache_dir).exists():
        return 0
    if model.name in ORGANISMS:
        return 0
    try:
        location = model_location(model, cache_dir)
    except MvpError:
        return 0
    bytes_per = DTYPE_BYTES.get(model.dtype, 2 if on_gpu else 4)  # auto: half precision on a GPU
    return worker_memory(parameter_count(location, model), bytes_per, on_gpu)


class WorkerPool:
    """The model-holding actors of one model, started on first need and killed on exit.

    Extraction and control share the pool, so a model is loaded once per worker per submission,
    and not at all when every result comes from the store.
    """

    def __init__(self, model: ModelSpec, spec: Spec, request: WorkerRequest, cache_dir: Path | None) -> None:
        self.model, self.spec, self.request, self.cache_dir = model, spec, request, cache_dir
        self._workers: list | None = None
        self._counter: object | None = None
        self.error: Exception | None = None
        self.n_layers = 0
        self.device = ""
        self.loads: list[int] = []  # model loads per worker (1 + Ray restarts), known once the pool closes
        self.load_seconds = 0.0  # until the first worker answered (the others load alongside)

    def workers(self, describe: Callable[[str], None] | None = None) -> list | None:
        """The live actors (loading the model on first call), or None when loading failed."""
        if self._workers is not None or self.error is not None:
            return self._workers
        if describe is not None:
            note = ""
            if self.model.name in PACKAGED and not converted_dir(self.model.name, self.cache_dir).exists():
                note = " (first use: converting the packaged GGUF once, about 2 minutes)"
            describe(f"loading {self.model.short_name}{note}")
        retries = self.spec.resources.max_retries
        request = self.request.with_memory(model_memory(self.model, self.cache_dir, self.request.num_gpus > 0),
                                           ray.cluster_resources().get("memory"), self.model.short_name)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._counter = RemoteLoadCounter.options(scheduling_strategy=here).remote()
        options = {"num_cpus": request.num_cpus, "num_gpus": request.num_gpus, "max_restarts": retries,
                   "max_task_retries": retries, **({"memory": request.memory} if request.memory else {})}
        workers = [RemoteModelWorker.options(**options).remote(
                       self.model, str(self.cache_dir) if self.cache_dir else None, request.threads, self._counter, i)
                   for i in range(self.spec.resources.model_workers)]
        start = time.perf_counter()
        try:
            facts = ray.get(workers[0].describe.remote())
        except ray.exceptions.RayError as exc:
            self.error = exc
            for worker in workers:
                ray.kill(worker)
            return None
        self.n_layers, self.device = int(facts["n_layers"]), str(facts["device"])
        self.load_seconds = time.perf_counter() - start
        self._workers = workers
        return workers

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.loads = [self._loads(i, worker) for i, worker in enumerate(self._workers or [])]
        for worker in [*(self._workers or []), *([self._counter] if self._counter is not None else [])]:
            ray.kill(worker)  # free the resources for the next model
        self._workers = self._counter = None

    def _loads(self, index: int, worker: object) -> int:
        """The worker's own count; the counter's when the worker is gone (its restarts used up)."""
        try:
            return int(ray.get(worker.loads.remote()))  # type: ignore[attr-defined]
        except ray.exceptions.RayError:
            return int(ray.get(self._counter.count.remote(index)))  # type: ignore[union-attr]
