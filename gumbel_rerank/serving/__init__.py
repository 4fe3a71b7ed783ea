"""Serving: sentence-transformers export, the ``/rerank`` HTTP service and its micro-batcher,
reranking a file, and the load test.

May import evaluation, the method and the ground; never training or comparison."""
