"""Evaluation: metrics over rankings and answers, scoring a reranker on held-out questions, TREC run
files and paired tests, the reader probe and the gradient-signal measure.

May import the method and the ground; never training, comparison or serving."""
