"""The docs stay true to the code: every YAML key in the reference, every command in the README,
every YAML example valid."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from conftest import DEFAULT_CONFIG, ROOT, TEMPLATES
from pydantic import BaseModel

from leadflow.app.cli import app
from leadflow.config import ConfigError, load_config
from leadflow.config.schema import PipelineConfig
from leadflow.pipeline.events import KNOWN_EVENTS
from leadflow.rules.fields import catalog
from leadflow.settings import Settings

DOC = ROOT / "docs" / "pipeline-yaml.md"
README = ROOT / "README.md"
DOC_TEXT = DOC.read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


# --- helpers --------------------------------------------------------------------------------


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """Pydantic models inside a field annotation (through Annotated, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def reachable_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [PipelineConfig]
    while todo:
        model = todo.pop(0)
        if model in found:
            continue
        found.append(model)
        for info in model.model_fields.values():
            todo.extend(models_in(info.annotation))
    return found


def prose(text: str) -> str:
    """The document without its fenced code blocks."""
    return FENCE.sub("", text)


def key_tables(text: str) -> list[set[str]]:
    """For each markdown table, the backticked names in its first column."""
    tables: list[set[str]] = []
    inside = False
    for line in prose(text).splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        if not inside:
            tables.append(set())
            inside = True
        first_cell = line.split("|")[1]
        tables[-1].update(name.strip() for name in re.findall(r"`([^`]+)`", first_cell))
    return tables


def yaml_examples() -> list[tuple[int, str]]:
    """(line number, text) of every ```yaml block in the reference."""
    return [
        (DOC_TEXT.count("\n", 0, match.start()) + 1, match.group(2))
        for match in FENCE.finditer(DOC_TEXT)
        if match.group(1) == "yaml"
    ]


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in ``overlay`` replaces the base value."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """``validate``, ``db upgrade``, ...: every runnable command of a click/typer group."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(prefix)
        return
    for name, sub in subcommands.items():
        yield from command_paths(sub, (*prefix, name))


MODELS = reachable_models()
REQUIRED = {name for name, info in PipelineConfig.model_fields.items() if info.is_required()}
COMMANDS = sorted(command_paths(typer.main.get_command(app)))
EXAMPLES = yaml_examples()


# --- every key of the schema is in the reference -------------------------------------------


def test_the_walk_reaches_every_nested_section() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"Sender", "SendWindow", "Variant", "CadenceCompletion", "Exit", "Sla"} <= names
    assert {"OnEnter", "Renewal", "Checkin", "FitRule", "Bant", "Engagement"} <= names
    assert len(MODELS) >= 23


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_key_of_a_section_is_listed_in_one_table(model: type[BaseModel]) -> None:
    keys = set(model.model_fields)
    best = max(key_tables(DOC_TEXT), key=lambda table: len(keys & table))
    missing = sorted(keys - best)
    assert not missing, f"{model.__name__}: no table of docs/pipeline-yaml.md lists {missing}"


def test_every_rule_field_and_function_is_documented() -> None:
    rules = catalog({})
    text = prose(DOC_TEXT)
    missing = [name for name in rules.fields if f"`{name}`" not in text]
    missing += [f"{name}()" for name in rules.function_names() if f"`{name}(" not in text]
    assert not missing


def test_every_event_type_is_documented() -> None:
    text = prose(DOC_TEXT)
    assert [event for event in sorted(KNOWN_EVENTS) if f"`{event}`" not in text] == []


# --- every command is in the README --------------------------------------------------------


def test_the_cli_has_commands_and_subcommands() -> None:
    assert "validate" in COMMANDS
    assert "db upgrade" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command: str) -> None:
    assert README.exists(), "README.md is missing"
    text = README.read_text(encoding="utf-8")
    pattern = rf"\bleadflow {re.escape(command)}(?![\w-])"
    assert re.search(pattern, text), f"README.md never mentions `leadflow {command}`"


def readme_settings() -> set[str]:
    """The environment variables the README's settings table names; a row may shorten the
    later names of a group (`LEADFLOW_SMTP_HOST`, `_PORT`)."""
    names: set[str] = set()
    for line in README.read_text(encoding="utf-8").splitlines():
        cell = line.split("|")[1] if line.startswith("| `LEADFLOW_") else ""
        first = re.match(r" `(LEADFLOW_[A-Z]+)_", cell)
        for token in re.findall(r"`(_?[A-Z_]+)`", cell):
            names.add(
                token if token.startswith("LEADFLOW_") else f"{first[1]}{token}" if first else token
            )
    return names


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(field: str) -> None:
    assert f"LEADFLOW_{field.upper()}" in readme_settings()


# --- every YAML example is valid ----------------------------------------------------------


def test_the_reference_has_a_complete_example() -> None:
    complete = [text for _, text in EXAMPLES if set(yaml.safe_load(text) or {}) >= REQUIRED]
    assert complete, "docs/pipeline-yaml.md has no complete pipeline.yaml example"


@pytest.mark.parametrize(("line", "text"), EXAMPLES, ids=[f"line {n}" for n, _ in EXAMPLES])
def test_yaml_example_is_valid(line: int, text: str) -> None:
    """A complete file must validate as written; a fragment once merged into the default file."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"line {line}: the example is not a mapping of sections"
    unknown = sorted(set(data) - set(PipelineConfig.model_fields))
    assert not unknown, f"line {line}: unknown top-level keys {unknown}"
    source = f"example at line {line}"
    if not set(data) >= REQUIRED:
        default = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
        text = yaml.safe_dump(deep_merge(default, data), sort_keys=False, allow_unicode=True)
        source = f"default config + example at line {line}"
    try:
        load_config(Path(source), templates=TEMPLATES, text=text)
    except ConfigError as exc:
        pytest.fail(f"the example at line {line} is invalid:\n{exc}")
