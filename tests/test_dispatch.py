"""Jobs go to the first free actor: a slow actor keeps no queue while the others idle."""

import time

import pytest
import ray

from ray_jobs.dispatch import dispatch


@ray.remote(num_cpus=0)
class Sleeper:
    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, seconds

    def run(self, job: int) -> tuple[str, int]:
        time.sleep(self.seconds)
        if job == 5:
            raise ValueError("job 5 is bad")
        return self.name, job


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_a_slow_actor_takes_one_job_while_the_fast_one_drains_the_queue(local_ray):
    slow, fast = Sleeper.remote("slow", 3.0), Sleeper.remote("fast", 0.01)
    ray.get([slow.run.remote(0), fast.run.remote(0)])  # both started before timing matters
    done, failed = {}, {}
    dispatch(range(8), lambda job, actor: actor.run.remote(job), lambda job, value: done.update({job: value[0]}),
             lambda job, exc: failed.update({job: str(exc)}), actors=[slow, fast])
    assert sorted(done) == [0, 1, 2, 3, 4, 6, 7] and list(failed) == [5]
    assert "job 5 is bad" in failed[5]
    assert done[0] == "slow" and sum(name == "slow" for name in done.values()) == 1  # round-robin gave it 4


def test_without_actors_every_job_runs_as_a_task(local_ray):
    @ray.remote(num_cpus=0)
    def square(x: int) -> int:
        return x * x

    out = {}
    dispatch([1, 2, 3], lambda job, actor: square.remote(job), lambda job, value: out.update({job: value}),
             lambda job, exc: pytest.fail(str(exc)))
    assert out == {1: 1, 2: 4, 3: 9}
