"""How a spec's ``resources`` map onto Ray resource requests (pure arithmetic, tested alone)."""

from __future__ import annotations

from dataclasses import dataclass

from mvplatform.errors import SpecError
from mvplatform.spec import ResourcesSpec


@dataclass(frozen=True)
class WorkerRequest:
    """What each model worker (Ray actor) asks the scheduler for."""

    num_cpus: float
    num_gpus: float

    @property
    def threads(self) -> int:
        """Torch threads for the worker: its CPU share, at least one."""
        return max(1, int(self.num_cpus))

    def describe(self) -> str:
        return f"{self.num_cpus:g} CPU, {self.num_gpus:g} GPU"


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
