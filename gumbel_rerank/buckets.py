"""Batches of similar length: what the reader's doc encoding and the reranker's training forward share."""

from __future__ import annotations

BUCKET_RATIO = 0.8  # every input of a batch is at least this share of the batch's longest


def length_groups(lengths: list[int], ratio: float = BUCKET_RATIO) -> list[list[int]]:
    """Indices of ``lengths`` longest first (ties in input order), cut into groups whose every member is
    at least ``ratio`` times as long as the group's first (longest): a group pads at most ``1 - ratio``
    of its positions. ``ratio`` 0: one group of everything."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] >= ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
