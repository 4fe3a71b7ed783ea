"""Load test of `gumbel-rerank serve` on loopback: throughput and latency under concurrent clients.

    python bench/serve_load.py [MODEL]     # default: the packaged MiniLM cross-encoder; about 2 minutes

Starts the service in this process on a free loopback port, sends a bounded number of /rerank
requests (one HotpotQA question with its 10 paragraphs each) from concurrent client threads, and
prints throughput, p50/p95 latency and how many forward passes the micro-batcher needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, hotpot_questions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="all-minilm-l6-v2")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = p.parse_args()

    from gumbel_rerank.data.schema import doc_text
    from gumbel_rerank.serving.export import load_reranker
    from gumbel_rerank.serving.http import make_server
    from gumbel_rerank.serving.loadtest import load_test
    from gumbel_rerank.serving.protocol import Limits

    reranker = load_reranker(args.model)
    payloads = [
        {"query": ex.question, "documents": [doc_text(d.title, d.text) for d in ex.docs], "top_n": 5}
        for ex in hotpot_questions(args.requests, 10)
    ]
    rows = {}
    for concurrency in (1, 8):
        server, batcher = make_server(reranker, "127.0.0.1", 0, limits=Limits())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/rerank"
        load_test(url, payloads[:4], concurrency=1)  # warm-up
        batches_before = batcher.forward_batches
        result = load_test(url, payloads, concurrency=concurrency)
        rows[concurrency] = {
            "requests": result.requests,
            "errors": result.errors,
            "req_per_s": result.throughput,
            "p50_ms": result.percentile(50),
            "p95_ms": result.percentile(95),
            "forward_batches": batcher.forward_batches - batches_before,
        }
        server.shutdown()
        server.server_close()
        batcher.close()
    print(f"/rerank on loopback, {args.requests} requests of 10 HotpotQA paragraphs each, model {args.model}")
    print("| clients | req/s | p50 ms | p95 ms | errors | forward passes |\n|---|---|---|---|---|---|")
    for c, r in rows.items():
        print(f"| {c} | {r['req_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['errors']} | {r['forward_batches']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
