"""Jobs go to the first free actor: a slow actor keeps no queue while the others idle."""

import os
import time

import pytest
import ray

from ray_jobs.dispatch import ActorsLost, dispatch


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


# -- an actor that becomes unreachable (issue 18: a lost node, a killed process) --------------------


@ray.remote(num_cpus=0, max_restarts=1, max_task_retries=0)
class DiesOnce:
    """Kills its own process (as a lost node or the OOM killer would) the first time it gets job 2.

    With ``restart_sleep`` its restart takes that long (a model loading again).
    """

    def __init__(self, marker: str, restart_sleep: float = 0.0) -> None:
        if restart_sleep and os.path.exists(marker):
            time.sleep(restart_sleep)
        self.marker = marker

    def run(self, job: int) -> tuple[int, int]:
        if job == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return job, os.getpid()


@ray.remote(num_cpus=0, max_restarts=0)
class DiesForGood:
    def run(self, job: int) -> tuple[int, int]:
        os._exit(1)


@ray.remote(num_cpus=0)
class Steady:
    def run(self, job: int) -> tuple[int, int]:
        return job, os.getpid()


def _collect(jobs, actors, **kwargs):
    done, failed, notes = [], {}, []
    dispatch(jobs, lambda job, actor: actor.run.remote(job), lambda job, value: done.append(value),
             lambda job, exc: failed.update({job: exc}), actors=actors, note=notes.append, **kwargs)
    return done, failed, notes


def test_a_job_whose_actor_restarts_goes_back_to_the_queue_and_runs_once(local_ray, tmp_path):
    """max_task_retries=0: Ray hands the killed job back as ActorUnavailableError; dispatch retries it."""
    actor = DiesOnce.remote(str(tmp_path / "died"))
    done, failed, notes = _collect(range(5), [actor])
    assert failed == {}
    assert sorted(job for job, _ in done) == [0, 1, 2, 3, 4]  # every job once, none twice
    pids = dict(done)
    assert pids[0] == pids[1] != pids[2] == pids[3] == pids[4]  # 2 ran again on the restarted process
    assert any("worker 0 unreachable" in n and "ActorUnavailableError" in n for n in notes), notes
    assert any("worker 0 answers again" in n for n in notes), notes


def test_an_actor_dead_for_good_fails_its_job_and_the_other_actor_takes_the_rest(local_ray):
    done, failed, notes = _collect(range(6), [DiesForGood.remote(), Steady.remote()])
    assert list(failed) == [0] and isinstance(failed[0], ray.exceptions.ActorDiedError)  # no restarts left
    assert sorted(job for job, _ in done) == [1, 2, 3, 4, 5]
    # (whether "worker 0 dropped" is noted depends on timing: dispatch returns once every job has an
    # outcome, and the other actor may finish the queue before the dead one's ping comes back; CI saw both)


def test_with_no_actor_left_the_queued_jobs_fail_with_the_reason(local_ray):
    done, failed, _ = _collect(range(3), [DiesForGood.remote()])
    assert done == [] and sorted(failed) == [0, 1, 2]
    assert isinstance(failed[0], ray.exceptions.ActorDiedError)
    for job in (1, 2):
        assert isinstance(failed[job], ActorsLost)
        assert str(failed[job]).startswith("no worker left to run it (worker 0: it died for good (ActorDiedError")


def test_an_actor_that_does_not_come_back_in_time_is_dropped(local_ray, tmp_path):
    """Its restart takes 60 s, the bound is 3 s: the requeued job fails after ~3 s, not after 60."""
    actor = DiesOnce.remote(str(tmp_path / "died"), restart_sleep=60.0)
    start = time.monotonic()
    done, failed, notes = _collect([0, 2, 3], [actor], recover_seconds=3.0)
    assert time.monotonic() - start < 30
    assert [job for job, _ in done] == [0] and sorted(failed) == [2, 3]
    assert all(isinstance(exc, ActorsLost) for exc in failed.values())
    assert "did not answer for 3 s after it became unreachable" in str(failed[2])
    assert any("worker 0 dropped" in n for n in notes), notes
