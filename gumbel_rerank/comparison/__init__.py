"""Comparisons: rows x seeds with resumable result files (:mod:`.sweep`), their tables, plots and
paired tests (:mod:`.report`), and ``compare``, a one-seed sweep over objectives.

May import training, evaluation, the method and the ground; never serving."""
