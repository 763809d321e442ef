"""Long work off the request path: one background job per video, and server-sent events to every open page.

A propagation or an auto-label run takes from seconds to hours; requests must not wait for it. A
:class:`JobRunner` runs at most one job per video on a thread, with progress and a cancel flag. Whatever a
job computes is published to the video's :class:`EventHub` as it happens (one event per frame), which the
``/events`` endpoint streams to the page as server-sent events.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("segvlm.annotate")


class EventHub:
    """Fan-out of events per video: every subscriber gets every event published after it subscribed."""

    def __init__(self, backlog: int = 2_000):
        self.backlog = backlog
        self._subscribers: dict[str, list[queue.Queue]] = {}
        self._lock = threading.Lock()

    def subscribe(self, video: str) -> queue.Queue:
        subscriber: queue.Queue = queue.Queue(maxsize=self.backlog)
        with self._lock:
            self._subscribers.setdefault(video, []).append(subscriber)
        return subscriber

    def subscribed(self, video: str, subscriber: queue.Queue) -> bool:
        with self._lock:
            return subscriber in self._subscribers.get(video, [])

    def unsubscribe(self, video: str, subscriber: queue.Queue) -> None:
        with self._lock:
            if subscriber in self._subscribers.get(video, []):
                self._subscribers[video].remove(subscriber)

    def publish(self, video: str, event: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(video, []))
        for subscriber in subscribers:
            try:
                subscriber.put_nowait(event)
            except queue.Full:  # a page that stopped reading: it reloads its state when it reconnects
                self.unsubscribe(video, subscriber)


@dataclass
class Job:
    """One background job on one video.

    Attributes:
        id: unique in the server's lifetime.
        kind: ``"propagate"`` or ``"autolabel"``.
        total: frames it expects to compute (0 when unknown).
        done: frames computed so far.
        state: ``"running"``, ``"done"``, ``"cancelled"`` or ``"failed"``.
        message: what happened, for the page (the error's message when failed).
    """

    id: int
    video: str
    kind: str
    total: int = 0
    done: int = 0
    state: str = "running"
    message: str = ""
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "video": self.video,
            "kind": self.kind,
            "total": self.total,
            "done": self.done,
            "state": self.state,
            "message": self.message,
        }


class BusyError(RuntimeError):
    """A video already runs a job; the request should wait for it or cancel it."""


class JobRunner:
    """At most one running job per video, each on its own thread; results are published to ``hub``."""

    def __init__(self, hub: EventHub):
        self.hub = hub
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def current(self, video: str) -> Job | None:
        job = self._jobs.get(video)
        return job if job is not None and job.state == "running" else None

    def start(self, video: str, kind: str, total: int, work: Callable[[Job], str]) -> Job:
        """Run ``work(job)`` on a thread; it returns the final message and may check ``job.cancel``."""
        with self._lock:
            running = self.current(video)
            if running is not None:
                raise BusyError(
                    f"{video} is busy: {running.kind} {running.done}/{running.total or '?'} frames; wait for it or "
                    "cancel it (Esc)"
                )
            job = Job(next(self._ids), video, kind, total)
            self._jobs[video] = job

        def run() -> None:
            try:
                job.message = work(job)
                job.state = "cancelled" if job.cancel.is_set() else "done"
            except Exception as error:  # noqa: BLE001 - reported to the page, logged here
                log.exception("job %s on %s failed", kind, video)
                job.state, job.message = "failed", str(error) or type(error).__name__
            self.hub.publish(video, {"type": "job", **job.to_json()})

        self.hub.publish(video, {"type": "job", **job.to_json()})
        threading.Thread(target=run, daemon=True, name=f"segvlm-{kind}-{video}").start()
        return job

    def cancel(self, video: str) -> Job | None:
        job = self.current(video)
        if job is not None:
            job.cancel.set()
        return job

    def wait(self, video: str, timeout: float = 60.0) -> Job | None:
        """Block until the video's job finishes (tests and shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while self.current(video) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._jobs.get(video)
