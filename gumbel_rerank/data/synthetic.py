"""A deterministic generator of two-hop "bridge" questions: the embedded default data.

Each question names an entity E. One gold doc (the *bridge*) links E to a second entity X and does
not contain the answer; the other gold doc gives the answer about X and does not mention E. The
distractors have the same shapes: docs about E with other relations (one of them starts a
competing chain with its own answer-shaped doc) and bridge-shaped docs about other entities.
All names are invented from syllables, so the reader cannot answer from memory: it has to read
the docs. A doc scored on its own cannot tell the right answer doc from its same-shaped
distractor, which is what makes these questions a test of end-to-end training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .schema import Doc, Example, contains_answer

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "n", "r", "s", "l", "m", "th", "nd", "sk", "x"]


class NameMaker:
    """Unique invented names (``Varnel``, ``Trousk``...) from a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables))
            w = (w + self.rng.choice(_CODAS)).capitalize()
            if w not in self.used:
                self.used.add(w)
                return w

    def person(self) -> str:
        return f"{self.word(2)} {self.word(2)}"

    def year(self) -> str:
        while True:
            y = str(self.rng.randint(1820, 1999))
            if y not in self.used:
                self.used.add(y)
                return y


@dataclass(frozen=True)
class Chain:
    """One relation chain: how to phrase the question, the bridge doc and the answer doc."""

    question: str
    bridge: str  # mentions {e} and {x}
    answer: str  # mentions {x} and {a}
    other: tuple[str, ...]  # other facts about {e}; {y} is a second-hop entity of the same kind as {x}
    make_e: Callable[[NameMaker], str]
    make_x: Callable[[NameMaker], str]
    make_a: Callable[[NameMaker], str]


CHAINS = (
    Chain(
        question="In which country was {e} born?",
        bridge="{e} was born in the city of {x}, where the family ran a small bakery.",
        answer="{x} is a city in {a}, known for its old harbour and stone bridges.",
        other=(
            "{e} studied history at the university of {y} for four years.",
            "{e} once travelled to {y} to give a lecture on music.",
        ),
        make_e=NameMaker.person,
        make_x=lambda n: n.word(2),
        make_a=lambda n: n.word(3),
    ),
    Chain(
        question="In which city is the company that {e} works for based?",
        bridge="{e} works as an engineer at {x}, a firm that builds bridges.",
        answer="{x} is a company with its head office in the city of {a}.",
        other=("{e} once bought a car from {y} after a long search.", "{e} wrote a newspaper article criticising {y}."),
        make_e=NameMaker.person,
        make_x=lambda n: n.word(2) + " Works",
        make_a=lambda n: n.word(2),
    ),
    Chain(
        question="In which year was the director of the film {e} born?",
        bridge="{e} is a drama film directed by {x} and filmed in the mountains.",
        answer="{x} is a film maker who was born in {a} and started out as a painter.",
        other=("{e} was praised by the critic {y} in a long review.", "{e} features the actor {y} in a small role."),
        make_e=lambda n: "The " + n.word(2),
        make_x=NameMaker.person,
        make_a=NameMaker.year,
    ),
    Chain(
        question="What language is spoken on the island where {e} lives?",
        bridge="{e} is a fisherman who lives on the island of {x} with his two dogs.",
        answer="{x} is an island whose people speak {a}, an old language of sailors.",
        other=(
            "{e} sold fish to traders from the island of {y} every summer.",
            "{e} was rescued at sea near the island of {y} during a storm.",
        ),
        make_e=NameMaker.person,
        make_x=lambda n: n.word(2),
        make_a=lambda n: n.word(2) + "ish",
    ),
)


def _chain_docs(chain: Chain, names: NameMaker) -> tuple[str, str, str, str, str]:
    e, x, a = chain.make_e(names), chain.make_x(names), chain.make_a(names)
    return e, x, a, chain.bridge.format(e=e, x=x), chain.answer.format(x=x, a=a)


def make_example(rng: random.Random, index: int, num_docs: int, hard_negatives: int = 2) -> Example:
    """One question: 2 gold docs and ``num_docs - 2`` distractors of the same shapes, shuffled.

    Distractors, in order of filling: ``hard_negatives`` docs about the question's entity with
    another relation; one answer-shaped doc about the first of those docs' second-hop entity (a
    competing chain); then bridge-shaped docs about other entities.
    """
    names = NameMaker(rng)  # names are unique within a question
    chain = CHAINS[index % len(CHAINS)]
    e, x, a, bridge, answer = _chain_docs(chain, names)
    docs = [(e, bridge, True), (x, answer, True)]
    pool: list[tuple[str, str, bool]] = []
    for i, template in enumerate(chain.other[:hard_negatives]):
        y = chain.make_x(names)
        pool.append((e, template.format(e=e, y=y), False))
        if i == 0:
            pool.append((y, chain.answer.format(x=y, a=chain.make_a(names)), False))
    while len(pool) < num_docs:
        e2, _, _, bridge2, _ = _chain_docs(chain, names)
        pool.append((e2, bridge2, False))
    docs += pool[: num_docs - 2]
    rng.shuffle(docs)
    return Example(
        id=f"syn-{index:05d}",
        question=chain.question.format(e=e),
        answers=(a,),
        docs=tuple(
            Doc(id=f"syn-{index:05d}-{i}", title=title, text=text, is_gold=gold, has_answer=contains_answer(text, [a]))
            for i, (title, text, gold) in enumerate(docs)
        ),
    )


def generate(num_questions: int, *, num_docs: int = 8, seed: int = 0, hard_negatives: int = 2) -> list[Example]:
    """``num_questions`` two-hop questions; the same arguments always give the same questions.

    ``hard_negatives`` (0-2): docs about the question's entity with another relation (each with its
    own second-hop doc), which a ranker that only matches the entity cannot tell from the bridge.
    """
    if num_docs < 2:
        raise ValueError(f"num_docs must be >= 2 (two gold docs per question), got {num_docs}")
    rng = random.Random(seed)
    return [make_example(rng, i, num_docs, hard_negatives) for i in range(num_questions)]
