"""Stage configs: YAML/TOML loading, unknown keys with suggestions, CLI overriding the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import click
import pytest
from click.testing import CliRunner

from corpus.config import StageConfig, config_options, load_config_file, opt, resolve
from corpus.errors import ConfigError
from corpus.runner import RunOptions


@dataclass
class DemoConfig(StageConfig):
    section: ClassVar[str] = "demo"
    ngram: int = opt(13, help="Gram length.")
    policy: str = opt("ngram+lcs", help="Policy.", choices=("ngram+lcs", "ngram"))
    fields: list[str] = opt(help="Text fields.", factory=lambda: ["text"])
    mix: dict[str, float] = opt(help="Mix.", factory=dict)
    fail_on_hit: bool = opt(False, help="Gate.")


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError) as e:
        DemoConfig.from_mapping({"ngrma": 5}, source="p.yaml")
    assert str(e.value) == ("p.yaml: unknown key 'ngrma' for demo; did you mean 'ngram'? "
                            "(valid keys: fail_on_hit, fields, mix, ngram, policy)")


def test_bad_choice_and_type() -> None:
    with pytest.raises(ConfigError, match=r"p.yaml: key 'policy' must be one of ngram\+lcs, ngram, got 'lcs'"):
        DemoConfig.from_mapping({"policy": "lcs"}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"p.yaml: key 'ngram': invalid literal for int"):
        DemoConfig.from_mapping({"ngram": "thirteen"}, source="p.yaml")


def test_yaml_and_toml_agree(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("ngram: 8\nfields: [question, answer]\nmix: {web: 1.0, book: 2.0}\n")
    (tmp_path / "a.toml").write_text('ngram = 8\nfields = ["question", "answer"]\n[mix]\nweb = 1.0\nbook = 2.0\n')
    a = resolve(DemoConfig, str(tmp_path / "a.yaml"), {})
    b = resolve(DemoConfig, str(tmp_path / "a.toml"), {})
    assert a == b == DemoConfig(ngram=8, fields=["question", "answer"], mix={"web": 1.0, "book": 2.0})


def test_cli_flags_override_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("ngram: 8\npolicy: ngram\n")

    @click.command()
    @click.option("--config", "config_file")
    @config_options(DemoConfig)
    def cmd(config_file: str, **kw: object) -> None:
        click.echo(repr(resolve(DemoConfig, config_file, kw)))

    r = CliRunner().invoke(cmd, ["--config", str(tmp_path / "c.yaml"), "--ngram", "10", "--mix", "web=1,book=2.5"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == repr(DemoConfig(ngram=10, policy="ngram", mix={"web": 1, "book": 2.5}))


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{p}: invalid YAML"):
        load_config_file(p)


def test_run_options_validate() -> None:
    with pytest.raises(ConfigError) as e:
        RunOptions.from_mapping({"workers": 0})
    assert str(e.value) == "executor option 'workers' must be at least 1, got 0"
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        RunOptions.from_mapping({"worker": 2}, source="pipe.yaml")
