"""Mapping spec resources onto Ray requests."""

import pytest

from mvplatform.errors import SpecError
from mvplatform.spec import ResourcesSpec
from ray_jobs.resources import worker_request


def test_cpu_machine_gives_each_worker_its_share_of_cores():
    assert worker_request(ResourcesSpec(), 2, 0).num_cpus == 2
    request = worker_request(ResourcesSpec(model_workers=2), 8, 0)
    assert (request.num_cpus, request.num_gpus, request.threads) == (4, 0, 4)


def test_gpu_cluster_gives_one_gpu_and_one_cpu_per_worker_by_default():
    request = worker_request(ResourcesSpec(), 16, 4)
    assert (request.num_cpus, request.num_gpus) == (1, 1)
    assert worker_request(ResourcesSpec(gpus_per_worker=0.25), 16, 1).num_gpus == 0.25


def test_impossible_requests_are_refused_before_ray_waits_forever():
    with pytest.raises(SpecError, match="has 0 GPU"):
        worker_request(ResourcesSpec(gpus_per_worker=1), 2, 0)
    with pytest.raises(SpecError, match="cpus_per_worker=64"):
        worker_request(ResourcesSpec(cpus_per_worker=64), 2, 0)
