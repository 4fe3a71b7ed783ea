"""What a sweep row's result file holds, and when a finished one is reused: the held-out and mining
metrics, per-question values for paired tests, the logged steps and curve, and the answer memo
(the reader's answer NLL and EM/F1 given each hard top-k, computed once per question and doc set)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, from_dict
from ..data import Example
from ..data.schema import top_k_set
from ..evaluation.evaluate import per_question, reader_metrics, retrieval_metrics, topk_answer_nll
from ..evaluation.metrics import exact_match, f1_score
from ..jsonsafe import dumps
from ..readers.base import Reader

PER_QUESTION = ("R@{k}", "bridge_R@{k}", "FullSupport@{k}", "answer_R@{k}")  # kept per question (every eval.ks) for paired tests
PER_QUESTION_ONCE = ("RR",)  # and these, with the answer NLL given the top k where a reader ran
STEP_KEYS = ("step", "loss", "hard_loss", "tau", "lr", "seconds", "mask_sum", "mask_distinct", "mask_overlap")


class AnswerMemo:
    """The reader's answer NLL per token given each ranking's hard top-k docs and, with ``eval.generate``,
    its EM/F1 from them; each computed once per (question, doc set), so rows that keep the same docs
    share the work."""

    def __init__(self, reader: Reader, cfg: Config) -> None:
        self.reader, self.cfg = reader, cfg
        self.answers: dict[tuple[str, tuple[int, ...]], tuple[float, float]] = {}
        self.nll: dict[tuple[str, tuple[int, ...]], float] = {}

    @staticmethod
    def _keys(examples: Sequence[Example], scores: Sequence[Sequence[float]], k: int) -> list[tuple[str, tuple[int, ...]]]:
        """Each question's hard top-k doc set (ties to the lower index, as hard_topk)."""
        return [(ex.id, top_k_set(s, k)) for ex, s in zip(examples, scores, strict=True)]

    def remember(self, examples: Sequence[Example], scores: Sequence[Sequence[float]], k: int, nll: Sequence[float]) -> None:
        """Take answer NLLs computed earlier (another process: a resumed plan) for these rankings' top-k.

        A row that keeps a question's start docs then gets the start's value exactly, as it would within
        one process. Computed again, the same docs in other batches give values that differ by float
        rounding (up to 3e-4 nats per token here), and a paired test of a row that kept its start against
        the start would find that systematic: p 0.000 for a change of -0.000.
        """
        self.nll.update(zip(self._keys(examples, scores, k), nll, strict=True))

    def __call__(
        self, examples: Sequence[Example], scores: Sequence[Sequence[float]], k: int
    ) -> tuple[dict[str, float], list[float]]:
        """The means (answer NLL, and EM/F1 with ``eval.generate``) and each question's answer NLL."""
        ev = self.cfg.eval
        keys = self._keys(examples, scores, k)
        todo = [i for i, key in enumerate(keys) if key not in self.nll]
        if todo:
            nll = topk_answer_nll(
                self.reader, [examples[i] for i in todo], [scores[i] for i in todo], k=k, batch_size=ev.batch_size
            )
            self.nll.update((keys[i], v) for i, v in zip(todo, nll, strict=True))
        nll = [self.nll[key] for key in keys]
        out = {"answer_nll": sum(nll) / len(keys)}
        if not ev.generate:
            return out, nll
        todo = [i for i, key in enumerate(keys) if key not in self.answers]
        if todo:
            qa = reader_metrics(
                self.reader,
                [examples[i] for i in todo],
                [scores[i] for i in todo],
                k=k,
                batch_size=ev.batch_size,
                max_new_tokens=ev.max_new_tokens,
            )
            for i, pred in zip(todo, qa["predictions"], strict=True):
                self.answers[keys[i]] = (exact_match(pred, examples[i].answers), f1_score(pred, examples[i].answers))
        em, f1 = zip(*(self.answers[key] for key in keys), strict=True)
        return {**out, "EM": sum(em) / len(em), "F1": sum(f1) / len(f1), "generated": len(todo)}, nll


def _result(
    held_out: list[Example],
    held: list[list[float]],
    train_set: list[Example],
    mine: list[list[float]],
    cfg: Config,
    memo: AnswerMemo | None,
) -> dict[str, Any]:
    ks = cfg.eval.ks
    out: dict[str, Any] = {"held_out": retrieval_metrics(held_out, held, ks), "mining": retrieval_metrics(train_set, mine, ks)}
    rows = per_question(held_out, held, ks)
    names = [t.format(k=k) for t in PER_QUESTION for k in ks] + list(PER_QUESTION_ONCE)
    out["per_question"] = {m: [r[m] for r in rows] for m in names}
    if memo is not None:
        means, out["per_question"]["answer_nll"] = memo(held_out, held, cfg.objective.k)
        out["held_out"].update(means)
    out["held_out_scores"] = held
    return out


def _steps_and_curve(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training steps (their logged figures) and the evaluation points (validation answer NLL,
    label-free, and held-out gold recall against step), from one read of ``metrics.jsonl``."""
    log = run_dir / "metrics.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    steps = [{k: v for k, v in row.items() if k in STEP_KEYS} for row in lines if "loss" in row]
    return steps, [row for row in lines if "val_loss" in row]


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any] | None:
    """A stored config's sections as the config they mean now: a key added since it was written takes
    its default (keys are added with the behaviour they had before as default); None if a key it
    names no longer exists."""
    try:
        full = from_dict(stored).to_dict()
    except ConfigError:
        return None
    return json.loads(dumps({section: full[section] for section in stored}))  # as written (lists, no NaN)


def _reuse(path: Path, config: dict[str, Any], what: str, key: str = "config") -> dict[str, Any]:
    """A finished result, kept only if it was made with the config the plan has now."""
    res: dict[str, Any] = json.loads(path.read_text())
    if res.get(key) is not None and _with_defaults(res[key]) != json.loads(dumps(config)):
        raise ConfigError(
            f"{path} was made with another config than {what} has now; move it away to rerun it, or restore the config"
        )
    return res
