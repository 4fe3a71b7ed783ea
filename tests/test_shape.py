"""The codebase's shape, held by tests: no import circle in the package, and an objective is one file
and one registry entry (the CLI, the sweep and the config check pick it up from ``OBJECTIVES``)."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import byte_tokenizer, tiny_llama
from test_train import small_config

from gumbel_rerank import objectives
from gumbel_rerank.cli import main, parser
from gumbel_rerank.comparison.compare import compare
from gumbel_rerank.config import ConfigError, ObjectiveConfig
from gumbel_rerank.objectives import OBJECTIVES, SHARED_KEYS, LossOutput, ObjectiveBase
from gumbel_rerank.readers import make_reader

PACKAGE = Path(__file__).resolve().parents[1] / "gumbel_rerank"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in the file (inside functions too), except under
    ``if TYPE_CHECKING:`` (annotations only, never run)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.startswith("gumbel_rerank") and _exists(n)}
    return out - {module_name(path)}


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel.with_suffix(".py")).exists() or (PACKAGE.parent / rel / "__init__.py").exists()


def test_the_package_has_no_import_circle() -> None:
    graph: dict[str, set[str]] = {}
    for p in PACKAGE.rglob("*.py"):
        mod = module_name(p)
        mine = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 2)}  # mod and its packages
        deps = set()
        for target in package_imports(p):  # importing a.b.c runs a/b/__init__ first, unless a.b is mod's own
            parts = target.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - mine
        graph[mod] = deps
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        if state.get(mod) == 2:
            return
        if state.get(mod) == 1:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(mod) :], mod]))
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            visit(dep, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        visit(mod, [])
    assert "gumbel_rerank.objectives" not in graph["gumbel_rerank.config"]  # the circle this test was written for


def test_the_circle_finder_finds_a_circle(tmp_path: Path) -> None:
    """The finder itself: two modules importing each other are reported (a check that cannot fail is no check)."""
    a, b = PACKAGE / "_circle_a.py", PACKAGE / "_circle_b.py"
    try:
        a.write_text("from . import _circle_b\n")
        b.write_text("from ._circle_a import x\n")
        with pytest.raises(AssertionError, match="import circle"):
            test_the_package_has_no_import_circle()
    finally:
        a.unlink(missing_ok=True)
        b.unlink(missing_ok=True)


def test_every_objective_declares_what_it_reads() -> None:
    keys = {f.name for f in fields(ObjectiveConfig)}
    read = set(SHARED_KEYS)
    for name, cls in OBJECTIVES.items():
        assert cls.name == name and cls.title and set(cls.reads) <= keys, name
        read |= set(cls.reads)
    assert read == keys  # no key in ObjectiveConfig that nothing reads


class Throwaway(ObjectiveBase):
    """A reranker-only objective for the test: pull every score towards zero."""

    name = "throwaway"
    title = "Throwaway"
    reads = ()

    @classmethod
    def check_data(cls, cfg: ObjectiveConfig, examples: list) -> None:  # type: ignore[type-arg]
        if len(examples) < 2:
            raise ConfigError("throwaway needs two questions")

    def __call__(self, batch, doc_scores, reader, generator):  # type: ignore[no-untyped-def]
        loss = (doc_scores.masked_fill(~batch.valid, 0.0) ** 2).mean()
        return LossOutput(loss, {"loss": loss.item()})


def test_a_new_objective_is_one_class_and_one_registry_entry(
    tmp_path: Path, bert_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(OBJECTIVES, "throwaway", Throwaway)
    compare_cmd = next(
        a
        for a in parser()._subparsers._group_actions[0].choices["compare"]._actions  # type: ignore[union-attr]
        if "--objectives" in a.option_strings
    )
    assert "throwaway" in compare_cmd.default.split(",") and "throwaway" in compare_cmd.help
    cfg = small_config(
        tmp_path,
        bert_dir,
        "eval.generate=false",
        "train.checkpoint_every=0",
        "train.steps=2",
        "train.grad_accum=1",
        "objective.name=throwaway",
    )
    objectives.check(cfg, [object(), object()])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="two questions"):
        objectives.check(cfg, [object()])  # type: ignore[list-item]
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    result = compare(cfg, ["gumbel", "throwaway"], tmp_path / "cmp", progress=False, reader=reader)
    assert list(result.rows) == ["zero-shot", "gumbel", "throwaway"]
    assert "| throwaway | 1 |" in (tmp_path / "cmp" / "table.md").read_text()
    assert 0.0 <= result.rows["throwaway"]["R@2"] <= 1.0 and result.rows["throwaway"]["seconds"] > 0


def test_an_unregistered_objective_is_refused_before_any_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "configs/default.yaml", "objective.name=magic"]) == 2
    assert "objective.name must be one of gumbel, reinforce, adist" in capsys.readouterr().err


# The import layers, top to bottom (docs/design.md). A module may import its own layer and any layer
# below it, never one above; serving and comparison are peers that never import each other.
ENTRY = {"gumbel_rerank", "gumbel_rerank.api", "gumbel_rerank.cli", "gumbel_rerank.commands"}
LAYERS = {
    "comparison": ("comparison", "training", "evaluation", "method", "ground"),
    "serving": ("serving", "evaluation", "method", "ground"),
    "training": ("training", "evaluation", "method", "ground"),
    "evaluation": ("evaluation", "method", "ground"),
    "method": ("method", "ground"),
    "ground": ("ground",),
}
GROUND = {"data", "config", "jsonsafe", "models", "devices"}
METHOD = {"topk", "masking", "buckets", "readers", "rerankers", "onnx_reranker", "prefix_cache", "objectives"}


def layer_of(module: str) -> str | None:
    """The layer of a package module (None for the entry points, which may import anything)."""
    if module in ENTRY:
        return None
    top = module.split(".")[1]
    if top in LAYERS:
        return top
    if top in METHOD:
        return "method"
    if top in GROUND:
        return "ground"
    raise AssertionError(f"{module} has no layer: add it to tests/test_shape.py and docs/design.md")


def layering_violations() -> list[str]:
    out = []
    for p in sorted(PACKAGE.rglob("*.py")):
        mod = module_name(p)
        mine = layer_of(mod)
        if mine is None:
            continue
        for target in sorted(package_imports(p)):
            theirs = layer_of(target)
            if theirs is not None and theirs not in LAYERS[mine]:
                out.append(f"{mod} ({mine}) imports {target} ({theirs})")
    return out


def test_no_lower_layer_imports_a_higher_one() -> None:
    assert layering_violations() == []


def test_the_layering_check_finds_an_upward_import() -> None:
    """A check that cannot fail is no check: a method module importing training is reported."""
    bad = PACKAGE / "_upward.py"
    METHOD.add("_upward")
    try:
        bad.write_text("from .training import checkpoint\n")
        assert layering_violations() == [
            "gumbel_rerank._upward (method) imports gumbel_rerank.training (training)",
            "gumbel_rerank._upward (method) imports gumbel_rerank.training.checkpoint (training)",
        ]
    finally:
        METHOD.discard("_upward")
        bad.unlink(missing_ok=True)


def test_no_package_file_is_over_300_lines_and_the_readme_over_250() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
    assert len((PACKAGE.parent / "README.md").read_text().splitlines()) <= 250
