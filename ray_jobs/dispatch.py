"""One way to run jobs on Ray: a free-actor queue, so no actor holds a pre-assigned list of work.

Each actor runs one job at a time; whichever finishes first takes the next job, so a slow or
restarting actor (Ray retries its job after a restart, ``max_task_retries``) delays only the job it
holds while the others drain the queue. Results are handed back in finishing order. Progress goes
out through plain callbacks, never through a display object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ray

J = TypeVar("J")


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class ProgressHooks:
    """How distribution code reports: ``advance(n)`` units done, ``describe(text)`` the current step,
    ``note(line)`` a line worth keeping (a result, a warning)."""

    advance: Callable[[int], None] = _ignore
    describe: Callable[[str], None] = _ignore
    note: Callable[[str], None] = _ignore


def dispatch(jobs: Iterable[J], call: Callable[[J, Any], ray.ObjectRef], on_result: Callable[[J, Any], None],
             on_error: Callable[[J, ray.exceptions.RayError], None], actors: Sequence[Any] | None = None) -> None:
    """Run every job and hand each outcome to ``on_result(job, value)`` or ``on_error(job, error)``.

    ``call(job, actor)`` submits one job and returns its object ref. With ``actors`` each job goes to
    the first free actor; without (Ray tasks, ``actor`` is None) every job is submitted at once and
    Ray's scheduler spreads them.
    """
    queue = deque(jobs)
    free: deque[Any] = deque(actors) if actors is not None else deque()
    running: dict[ray.ObjectRef, tuple[J, Any]] = {}
    while queue or running:
        while queue and (free or actors is None):
            actor = free.popleft() if actors is not None else None
            job = queue.popleft()
            running[call(job, actor)] = (job, actor)
        ready, _ = ray.wait(list(running), num_returns=1)
        job, actor = running.pop(ready[0])
        if actor is not None:
            free.append(actor)
        try:
            value = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            on_error(job, exc)
        else:
            on_result(job, value)
