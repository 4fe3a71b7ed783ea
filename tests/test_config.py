"""Config: YAML + typed overrides; unknown keys name the closest valid one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumbel_rerank.config import VALID_KEYS, ConfigError, dump, load


def test_defaults_and_typed_overrides(tmp_path: Path) -> None:
    cfg = load(None, ["objective.tau=0.3", "objective.k=3", "train.steps=7", "eval.ks=[1, 5]", "objective.tau_final=0.1"])
    assert cfg.objective.tau == 0.3 and cfg.objective.k == 3 and cfg.train.steps == 7
    assert cfg.eval.ks == (1, 5) and cfg.objective.tau_final == 0.1
    path = tmp_path / "c.yaml"
    path.write_text(dump(cfg))
    assert load(path) == cfg  # the resolved config written next to a run reloads to the same config


def test_int_accepted_for_float() -> None:
    assert load(None, ["objective.tau=1"]).objective.tau == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("objective.tua=0.3", "did you mean 'objective.tau'"),
        ("train.step=3", "did you mean 'train.steps'"),
        ("objective.k=two", "objective.k must be int"),
        ("objective.straight_through=3", "must be bool"),
        ("reader.layout=diagonal", "reader.layout must be"),
        ("objective.tau=0", "tau must be > 0"),
        ("tau", "key=value"),
    ],
)
def test_bad_overrides_fail_with_the_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, [override])


def test_unknown_yaml_key_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  kapa: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'objective.kappa'"):
        load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([*VALID_KEYS, "x.y", "objective", "a"]), st.text(max_size=20))
def test_fuzzed_overrides_raise_only_config_errors(key: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        load(None, [f"{key}={value}"])


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_yaml_files_raise_only_config_errors(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    with contextlib.suppress(ConfigError):
        load(f.name)
