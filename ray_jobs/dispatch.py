"""One way to run jobs on Ray: a free-actor queue, so no actor holds a pre-assigned list of work.

Each actor runs one job at a time; whichever finishes first takes the next job, so a slow or
restarting actor (Ray retries its job after a restart, ``max_task_retries``) delays only the job it
holds while the others drain the queue. Results are handed back in finishing order. Progress goes
out through plain callbacks, never through a display object.

An actor that becomes unreachable (``ActorUnavailableError``: its node is lost, or its process died
and Ray is restarting it) can spend its job's ``max_task_retries`` within seconds, before Ray has
noticed the loss and restarted the actor elsewhere. The job is then not failed but put back at the
front of the queue, and the actor is given work again only once it answers a ping (Ray's built-in
``__ray_ready__``), within :data:`RECOVER_SECONDS`; an actor dead for good, or silent past that
bound, is dropped (and killed, so nothing waits on it later). Jobs must be idempotent: one may run
twice (a lost node may have finished it), but each job's outcome is handed back exactly once.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

J = TypeVar("J")

RECOVER_SECONDS = 600.0  # an unreachable actor's way back includes Ray noticing the loss and loading the model again
PING_EVERY = 1.0  # seconds between pings of an actor that answered "unavailable"
MAX_REQUEUES = 3  # times one job goes back to the queue because its actor became unreachable


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class ProgressHooks:
    """How distribution code reports: ``advance(n)`` units done, ``describe(text)`` the current step,
    ``note(line)`` a line worth keeping (a result, a warning)."""

    advance: Callable[[int], None] = _ignore
    describe: Callable[[str], None] = _ignore
    note: Callable[[str], None] = _ignore


class ActorsLost(RuntimeError):
    """Every actor is gone (dead for good, or silent past the bound): the jobs still queued cannot run."""


def dispatch(jobs: Iterable[J], call: Callable[[J, Any], ray.ObjectRef], on_result: Callable[[J, Any], None],
             on_error: Callable[[J, Exception], None], actors: Sequence[Any] | None = None,
             note: Callable[[str], None] = _ignore, recover_seconds: float = RECOVER_SECONDS) -> None:
    """Run every job and hand each outcome to ``on_result(job, value)`` or ``on_error(job, error)``, once.

    ``call(job, actor)`` submits one job and returns its object ref. With ``actors`` each job goes to
    the first free actor, and an unreachable actor's job is retried (module docstring); ``note``
    hears about it. Without (Ray tasks, ``actor`` is None) every job is submitted at once and Ray's
    scheduler spreads them.
    """
    if actors is None:
        _run_tasks(list(jobs), call, on_result, on_error)
    else:
        _ActorQueue(list(actors), call, on_result, on_error, note, recover_seconds).run(jobs)


def _run_tasks(jobs: list[J], call: Callable[[J, Any], ray.ObjectRef], on_result: Callable[[J, Any], None],
               on_error: Callable[[J, Exception], None]) -> None:
    running = {call(job, None): job for job in jobs}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        job = running.pop(ready[0])
        try:
            value = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            on_error(job, exc)
        else:
            on_result(job, value)


class _ActorQueue(Generic[J]):
    """The free-actor loop; actors are known by their index, jobs by their position in the input."""

    def __init__(self, actors: list[Any], call: Callable[[J, Any], ray.ObjectRef], on_result: Callable[[J, Any], None],
                 on_error: Callable[[J, Exception], None], note: Callable[[str], None], recover_seconds: float) -> None:
        self.actors, self.call, self.on_result, self.on_error = actors, call, on_result, on_error
        self.note, self.recover_seconds = note, recover_seconds
        self.queue: deque[tuple[int, J]] = deque()
        self.free: deque[int] = deque(range(len(actors)))
        self.running: dict[ray.ObjectRef, tuple[int, J, int]] = {}  # ref -> (job number, job, actor)
        self.pings: dict[ray.ObjectRef, int] = {}  # an unreachable actor's outstanding ping -> actor
        self.retry_at: dict[int, float] = {}  # actor -> when to ping it again (its last ping: unavailable)
        self.since: dict[int, float] = {}  # actor -> when it became unreachable
        self.lost: dict[int, str] = {}  # actor -> why it was dropped
        self.requeues: Counter[int] = Counter()

    def run(self, jobs: Iterable[J]) -> None:
        self.queue.extend(enumerate(jobs))
        while self.queue or self.running:  # an actor still coming back is not waited for once no job needs it
            while self.queue and self.free:
                number, job = self.queue.popleft()
                actor = self.free.popleft()
                self.running[self.call(job, self.actors[actor])] = (number, job, actor)
            if self.queue and not (self.running or self.since):  # no actor left and none coming back
                self._fail_queue()
                return
            self._step()

    def _step(self) -> None:
        """Waits for one job or ping to finish, or for the next ping or recovery deadline."""
        now = time.monotonic()
        moments = [*self.retry_at.values(), *(t + self.recover_seconds for t in self.since.values())]
        timeout = max(0.0, min(moments) - now) if moments else None
        refs = [*self.running, *self.pings]
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout or 0.0)
            ready = []
        for ref in ready:
            if ref in self.running:
                self._job_done(ref)
            else:
                self._ping_done(ref)
        now = time.monotonic()
        for actor, started in list(self.since.items()):
            if now - started >= self.recover_seconds:
                self._drop(actor, f"it did not answer for {self.recover_seconds:.0f} s after it became unreachable")
            elif self.retry_at.get(actor, now + 1) <= now:
                del self.retry_at[actor]
                self.pings[self.actors[actor].__ray_ready__.remote()] = actor

    def _job_done(self, ref: ray.ObjectRef) -> None:
        number, job, actor = self.running.pop(ref)
        try:
            value = ray.get(ref)
        except RayActorError as exc:  # the actor, not the job, failed: find out whether it comes back
            self._recover(actor, exc)
            if isinstance(exc, ActorUnavailableError) and self.requeues[number] < MAX_REQUEUES:
                self.requeues[number] += 1
                self.queue.appendleft((number, job))
                self.note(f"  worker {actor} unreachable ({_first_line(exc)}): its job goes back to the queue, "
                          f"waiting up to {self.recover_seconds:.0f} s for the worker to answer again")
            else:  # ActorDiedError: Ray spent the job's own retries (max_task_retries) on it
                self.on_error(job, exc)
        except ray.exceptions.RayError as exc:
            self.free.append(actor)
            self.on_error(job, exc)
        else:
            self.free.append(actor)
            self.on_result(job, value)

    def _recover(self, actor: int, exc: Exception) -> None:
        """Pings the actor until it answers (then it is free again), dies for good or the bound passes."""
        self.since.setdefault(actor, time.monotonic())
        self.pings[self.actors[actor].__ray_ready__.remote()] = actor

    def _ping_done(self, ref: ray.ObjectRef) -> None:
        actor = self.pings.pop(ref)
        if actor not in self.since:  # dropped meanwhile
            return
        try:
            ray.get(ref)
        except ActorDiedError as exc:
            self._drop(actor, f"it died for good ({_first_line(exc)})")
        except RayActorError:  # still unreachable: Ray has not noticed the loss yet, or is restarting it
            self.retry_at[actor] = time.monotonic() + PING_EVERY
        else:
            del self.since[actor]
            self.free.append(actor)
            self.note(f"  worker {actor} answers again")

    def _drop(self, actor: int, why: str) -> None:
        self.since.pop(actor, None)
        self.retry_at.pop(actor, None)
        for ref in [ref for ref, a in self.pings.items() if a == actor]:
            del self.pings[ref]
        self.lost[actor] = why
        ray.kill(self.actors[actor], no_restart=True)  # so that nothing asks it anything later and waits forever
        self.note(f"  worker {actor} dropped: {why}")

    def _fail_queue(self) -> None:
        why = "; ".join(f"worker {actor}: {reason}" for actor, reason in sorted(self.lost.items()))
        while self.queue:
            _, job = self.queue.popleft()
            self.on_error(job, ActorsLost(f"no worker left to run it ({why})"))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
