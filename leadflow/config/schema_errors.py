"""Turn pydantic's validation errors into ``Issue``s that point at the file's own lines.

Kept apart from the cross-reference checks (validate.py): this half only reads the schema's
types to explain what pydantic rejected.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from leadflow.config.schema import PipelineConfig
from leadflow.config.source import Issue, Path_, YamlDocument
from leadflow.suggest import did_you_mean


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The pydantic model that sits at ``loc`` in the schema, to suggest its keys."""
    current: list[Any] = [PipelineConfig]
    for part in loc:
        nxt: list[Any] = []
        for ann in current:
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                if isinstance(part, str) and part in ann.model_fields:
                    nxt.extend(_unwrap(ann.model_fields[part].annotation))
            else:
                origin = typing.get_origin(ann)
                args = typing.get_args(ann)
                if origin is list and isinstance(part, int):
                    nxt.extend(_unwrap(args[0]))
                elif origin is dict:
                    nxt.extend(_unwrap(args[1]))
        current = nxt
    for ann in current:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
    return None


def schema_issues(doc: YamlDocument, exc: ValidationError) -> list[Issue]:
    """One issue per pydantic error, with a did-you-mean for unknown keys, in file order."""
    issues: list[Issue] = []
    for error in exc.errors():
        loc: Path_ = tuple(p for p in error["loc"] if p != "[key]")
        is_key = "[key]" in error["loc"]
        kind = error["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1])
            model = _model_at(loc[:-1])
            hint = did_you_mean(name, model.model_fields) if model else ""
            issues.append(doc.issue(loc, f"unknown key '{name}'{hint}", key=True))
        elif kind == "missing":
            issues.append(doc.issue(loc[:-1], f"missing required key '{loc[-1]}'"))
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind == "string_pattern_mismatch":
                message = (
                    f"'{error['input']}' is not a valid id (use lower_snake_case: "
                    "letters, digits and _, starting with a letter)"
                )
            issues.append(doc.issue(loc, message, key=is_key))
    issues.sort(key=lambda i: (i.line, i.column))
    return issues
