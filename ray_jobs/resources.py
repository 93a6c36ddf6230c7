"""How a spec's ``resources`` map onto Ray resource requests (pure arithmetic, tested alone)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mvplatform.errors import SpecError
from mvplatform.spec import ResourcesSpec


@dataclass(frozen=True)
class WorkerRequest:
    """What each model worker (Ray actor) asks the scheduler for."""

    num_cpus: float
    num_gpus: float
    memory: int = 0  # bytes of host memory (Ray's ``memory`` resource); 0: none asked for

    def with_memory(self, memory: int, cluster_memory: float | None, model: str) -> WorkerRequest:
        """This request asking for ``memory`` bytes; refused when the cluster has less in all."""
        if cluster_memory is not None and memory > cluster_memory:
            raise SpecError(f"{model} needs about {memory / 2**30:.1f} GiB of memory per worker, but the Ray cluster "
                            f"has {cluster_memory / 2**30:.1f} GiB; use a smaller model or dtype, or a bigger cluster")
        return replace(self, memory=memory)

    @property
    def threads(self) -> int:
        """Torch threads for the worker: its CPU share, at least one."""
        return max(1, int(self.num_cpus))

    def describe(self) -> str:
        memory = f", {self.memory / 2**30:.1f} GiB" if self.memory else ""
        return f"{self.num_cpus:g} CPU, {self.num_gpus:g} GPU{memory}"


def worker_request(resources: ResourcesSpec, cluster_cpus: float, cluster_gpus: float) -> WorkerRequest:
    """Per-worker CPUs and GPUs; refuses requests no node of this cluster could ever satisfy.

    Defaults: on a GPU cluster one GPU and one CPU per worker; on CPUs only, the machine's CPUs
    shared evenly among a model's workers, so one worker on a laptop uses every core.
    """
    if resources.gpus_per_worker == "auto":
        gpus = 1.0 if cluster_gpus >= 1 else 0.0
    else:
        gpus = float(resources.gpus_per_worker)
    if gpus > cluster_gpus:
        raise SpecError(f"resources.gpus_per_worker={gpus:g} but the Ray cluster has {cluster_gpus:g} GPU(s); "
                        "set it to 0 (CPU) or auto, or join a cluster with GPUs (--address)")
    if resources.cpus_per_worker is not None:
        cpus = float(resources.cpus_per_worker)
    elif gpus > 0:
        cpus = 1.0
    else:
        cpus = max(1.0, float(int(cluster_cpus // resources.model_workers)))
    if cpus > cluster_cpus:
        raise SpecError(f"resources.cpus_per_worker={cpus:g} but the Ray cluster has {cluster_cpus:g} CPU(s); "
                        "lower it or leave it unset")
    return WorkerRequest(cpus, gpus)


BASE_MEMORY = 256 * 2**20  # the worker process, torch and the tokenizer, before any weight


def worker_memory(n_params: int | None, bytes_per_param: int, on_gpu: bool) -> int:
    """Host memory a model worker asks for, from the model's parameter count (0 when unknown).

    On CPU the weights live in host memory, with a fifth more for activations and the loading
    copy; on a GPU the host only stages the weights shard by shard, so a quarter of them.

    >>> worker_memory(1_000_000_000, 2, on_gpu=False) // 2**20
    2544
    >>> worker_memory(None, 4, on_gpu=False)
    0
    """
    if not n_params:
        return 0
    weights = n_params * bytes_per_param
    return BASE_MEMORY + (weights // 4 if on_gpu else weights * 6 // 5)
