"""The pipeline-as-code language: schema, positioned YAML loading, validation and lint.

The names below are imported on first use: ``leadflow.config.schema`` (plain pydantic models)
is what a helper process unpickling a ``Sender`` needs, and it must not pay for the validator,
the rule compiler and the database they bring.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leadflow.config.loaded import LoadedConfig
    from leadflow.config.schema import PipelineConfig
    from leadflow.config.source import ConfigError, Issue
    from leadflow.config.validate import load_config

__all__ = ["ConfigError", "Issue", "LoadedConfig", "PipelineConfig", "load_config"]

_HOMES = {
    "ConfigError": "leadflow.config.source",
    "Issue": "leadflow.config.source",
    "LoadedConfig": "leadflow.config.loaded",
    "PipelineConfig": "leadflow.config.schema",
    "load_config": "leadflow.config.validate",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
