"""The pipeline-as-code language: schema, positioned YAML loading, validation and lint.

The names below are imported on first use: ``leadflow.config.schema`` (plain pydantic models)
is what a helper process unpickling a ``Sender`` needs, and it must not pay for the validator,
the rule compiler and the database they bring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leadflow.lazy import lazy_names

if TYPE_CHECKING:
    from leadflow.config.loaded import LoadedConfig
    from leadflow.config.schema import PipelineConfig
    from leadflow.config.source import ConfigError, Issue
    from leadflow.config.validate import load_config

__all__ = ["ConfigError", "Issue", "LoadedConfig", "PipelineConfig", "load_config"]

__getattr__ = lazy_names(
    __name__,
    {
        "ConfigError": "leadflow.config.source",
        "Issue": "leadflow.config.source",
        "LoadedConfig": "leadflow.config.loaded",
        "PipelineConfig": "leadflow.config.schema",
        "load_config": "leadflow.config.validate",
    },
)
