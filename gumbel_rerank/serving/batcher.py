"""The scoring thread behind ``serve``: pools concurrent requests into full batches, and keeps one
request from hurting another.

* A bounded queue: when ``max_queue`` requests already wait, a new one is refused at once
  (:class:`BusyError`, answered 503 with ``Retry-After``) instead of waiting behind work it cannot beat.
* Fair chunks: every forward pass takes up to ``max_batch_pairs`` pairs, the requests with the
  fewest pairs left first, and new requests join between passes; a 1000-document request advances
  chunk by chunk while short requests pass it.
* A deadline per request: work for a request whose deadline passed (nobody waits for it any more)
  is dropped before the next pass.
* Isolation: when a pooled batch fails, every request in it is scored again on its own; only the
  one that fails alone gets the error (:class:`BadInputError`, answered 422), the others their scores.
* Non-finite scores are an error, never an output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

from ..rerankers import Reranker

log = logging.getLogger(__name__)


class BusyError(Exception):
    """The queue is full: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadInputError(Exception):
    """This request's own input cannot be scored (the others pooled with it were)."""


class ScoringError(Exception):
    """The model failed or gave a non-finite score: a server-side problem."""


class DeadlineError(Exception):
    """The request's deadline passed before its scores were ready."""


@dataclass
class _Job:
    pairs: list[tuple[str, str]]
    deadline: float
    scores: list[float] = field(default_factory=list)
    scored: int = 0  # pairs scored so far (in order)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline


class MicroBatcher:
    """One thread owns the model; request threads hand it their pairs and wait, up to their deadline."""

    def __init__(
        self,
        reranker: Reranker,
        *,
        max_batch_pairs: int = 64,
        max_wait_ms: float = 5.0,
        timeout_s: float = 60.0,
        max_queue: int = 64,
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> None:
        self.reranker, self.batch_size, self.precision = reranker, batch_size, precision
        self.max_batch_pairs, self.max_wait_s, self.timeout_s = max_batch_pairs, max_wait_ms / 1000, timeout_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.forward_batches = self.requests = self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="rerank-batcher", daemon=True)
        self._thread.start()

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        job = _Job(pairs, deadline=time.monotonic() + self.timeout_s)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise BusyError(f"{self.jobs.maxsize} requests are waiting; retry shortly", retry_after=1) from None
        if not job.done.wait(self.timeout_s):
            job.deadline = -math.inf  # the scoring thread drops what is left of it
            raise DeadlineError(f"scoring took longer than the {self.timeout_s:g} s deadline; retry with fewer documents")
        if job.error is not None:
            raise job.error
        return job.scores

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self.jobs.put(None, timeout=5)
        self._thread.join(timeout=5)

    def _take(self, active: list[_Job]) -> bool:
        """Move waiting requests into ``active`` (waiting up to max_wait for more when idle); False on close."""
        if not active:
            first = self.jobs.get()
            if first is None:
                return False
            active.append(first)
            until = time.monotonic() + self.max_wait_s
            while sum(len(j.pairs) for j in active) < self.max_batch_pairs:
                try:
                    nxt = self.jobs.get(timeout=max(until - time.monotonic(), 0))
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                active.append(nxt)
        while True:
            try:
                nxt = self.jobs.get_nowait()
            except queue.Empty:
                return True
            if nxt is None:
                self.jobs.put(None)
                return bool(active)
            active.append(nxt)

    def _loop(self) -> None:
        active: list[_Job] = []
        while self._take(active):
            for j in active:
                if not j.scores:
                    j.scores = [math.nan] * len(j.pairs)
                    self.requests += 1
                if j.error is None and j.expired:
                    j.error = DeadlineError("the request's deadline passed")
                    self.dropped += 1
            todo = sorted((j for j in active if j.error is None), key=lambda j: len(j.pairs) - j.scored)
            chunk: list[tuple[_Job, int]] = []
            for j in todo:
                take = min(len(j.pairs) - j.scored, self.max_batch_pairs - len(chunk))
                chunk += [(j, i) for i in range(j.scored, j.scored + take)]
                j.scored += take
            try:
                if chunk:
                    self._score_chunk(chunk)
            except Exception as err:  # never let the scoring thread die
                log.exception("scoring failed")
                for j, _ in chunk:
                    j.error = j.error or ScoringError(f"scoring failed: {type(err).__name__}")
            for j in [j for j in active if j.error is not None or j.scored == len(j.pairs)]:
                if j.error is None and not all(math.isfinite(x) for x in j.scores):
                    j.error = ScoringError("the model produced a non-finite score; check the reranker (e.g. its temperature)")
                active.remove(j)
                j.done.set()

    def _score_chunk(self, chunk: list[tuple[_Job, int]]) -> None:
        try:
            scores = self._predict([j.pairs[i] for j, i in chunk])
        except Exception:
            self._isolate(chunk)
            return
        for (j, i), s in zip(chunk, scores, strict=True):
            j.scores[i] = s

    def _isolate(self, chunk: list[tuple[_Job, int]]) -> None:
        """A pooled batch failed: score each request on its own; only those that fail alone fail."""
        jobs = list({id(j): j for j, _ in chunk}.values())
        errors = []
        for job in jobs:
            mine = [(j, i) for j, i in chunk if j is job]
            try:
                for (j, i), s in zip(mine, self._predict([j.pairs[i] for j, i in mine]), strict=True):
                    j.scores[i] = s
            except Exception as err:
                errors.append(err)
                job.error = BadInputError(f"this request could not be scored ({type(err).__name__}: {err})")
        if len(jobs) > 1 and len(errors) == len(jobs):  # every request fails alone too: the model, not the input
            log.error("scoring failed for every request of a batch: %r", errors[0])
            for job in jobs:
                job.error = ScoringError(f"scoring failed: {type(errors[0]).__name__}")

    def _predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.forward_batches += 1
        return self.reranker.predict(pairs, batch_size=self.batch_size, precision=self.precision)
