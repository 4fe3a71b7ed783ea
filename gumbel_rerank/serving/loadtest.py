"""A bounded load test of the ``/rerank`` service (used by the tests and ``bench/``)."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]  # nearest-rank percentile


def post_json(url: str, payload: Any, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def load_test(url: str, payloads: Sequence[dict[str, Any]], *, concurrency: int = 8) -> LoadResult:
    """Send every payload once from ``concurrency`` client threads; latency per request."""

    def one(payload: dict[str, Any]) -> tuple[float, int]:
        t = time.perf_counter()
        status, _ = post_json(url, payload)
        return (time.perf_counter() - t) * 1000, status

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, payloads))
    seconds = time.perf_counter() - start
    return LoadResult(len(results), sum(s != 200 for _, s in results), seconds, [ms for ms, _ in results])
