"""Soak test of `gumbel-rerank serve` on loopback: 8 clients for a fixed time, 2 of them hostile.

    python bench/serve_soak.py [MODEL] [--seconds 120]     # default: the packaged MiniLM cross-encoder

Six clients send valid /rerank requests (a HotpotQA question with its 10 paragraphs) back to back;
one sends poisoned requests (a lone surrogate, a bad type, 10,000-digit top_n, deep nesting) and one
sends oversized ones (a 2 MB body, 1,500 documents, a 1000-document request near the limits that
costs real work). Reports whether every valid request got 200, their p50 / p95 latency, the longest
wait of any request against the deadline, the replies the hostile clients got, and the server's RSS
at the start and the end. Writes bench/results/serve_soak.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, hotpot_questions, percentile


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="all-minilm-l6-v2")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--timeout", type=float, default=20.0, help="the server's per-request deadline")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_soak.json"))
    args = p.parse_args()

    import urllib.request

    from gumbel_rerank.data.schema import doc_text
    from gumbel_rerank.serving.export import load_reranker
    from gumbel_rerank.serving.http import make_server
    from gumbel_rerank.serving.loadtest import post_json
    from gumbel_rerank.serving.protocol import Limits

    reranker = load_reranker(args.model)
    valid = [
        {"query": ex.question, "documents": [doc_text(d.title, d.text) for d in ex.docs], "top_n": 5}
        for ex in hotpot_questions(40, 10)
    ]
    long_doc = "word " * 3000  # 15,000 characters: within max_chars, costly to score
    poisoned = [
        b'{"query": "q", "documents": ["ok", "bad \\ud800"]}',
        b'{"query": "q", "documents": [1, 2]}',
        b'{"query": "q", "documents": ["d"], "top_n": ' + b"9" * 10_000 + b"}",
        b"[" * 50_000 + b"]" * 50_000,
    ]
    oversized = [
        b'{"query": "q", "documents": ["' + b"x" * (2 << 20) + b'"]}',
        json.dumps({"query": "q", "documents": ["d"] * 1500}).encode(),
        json.dumps({"query": "q", "documents": [long_doc[:900]] * 1000}).encode(),
    ]
    limits = Limits(timeout_s=args.timeout)
    server, batcher = make_server(reranker, "127.0.0.1", 0, limits=limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/rerank"
    post_json(url, valid[0])  # warm-up
    rss_start, stop = rss_mb(), time.monotonic() + args.seconds
    latencies: list[float] = []
    valid_status: Counter[int] = Counter()
    hostile_status: Counter[str] = Counter()
    longest = [0.0]
    lock = threading.Lock()

    def send(body: bytes) -> int:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=args.timeout + 30) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as err:
            err.read()
            return int(err.code)
        except OSError:
            return -1  # no reply: a dropped connection

    def client(kind: str, bodies: list[bytes]) -> None:
        i = 0
        while time.monotonic() < stop:
            body = bodies[i % len(bodies)]
            t = time.perf_counter()
            status = send(body)
            ms = (time.perf_counter() - t) * 1000
            with lock:
                longest[0] = max(longest[0], ms)
                if kind == "valid":
                    latencies.append(ms)
                    valid_status[status] += 1
                else:
                    hostile_status[f"{kind} {status}"] += 1
            i += 1

    valid_bodies = [json.dumps(v).encode() for v in valid]
    threads = [threading.Thread(target=client, args=("valid", valid_bodies[i::6])) for i in range(6)]
    threads += [
        threading.Thread(target=client, args=("poisoned", poisoned)),
        threading.Thread(target=client, args=("oversized", oversized)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = {
        "command": "python bench/serve_soak.py",
        "model": args.model,
        "seconds": args.seconds,
        "clients": 8,
        "deadline_s": args.timeout,
        "valid_requests": sum(valid_status.values()),
        "valid_status": dict(valid_status),
        "all_valid_got_200": set(valid_status) == {200},
        "valid_p50_ms": percentile(latencies, 50),
        "valid_p95_ms": percentile(latencies, 95),
        "longest_wait_ms": longest[0],
        "longest_wait_within_deadline": longest[0] <= (args.timeout + 5) * 1000,
        "hostile_replies": dict(hostile_status),
        "dropped_connections": sum(v for k, v in hostile_status.items() if k.endswith(" -1")),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_mb(),
        "batches_dropped_at_deadline": batcher.dropped,
    }
    server.shutdown()
    server.server_close()
    batcher.close()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for key, value in result.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
