"""The pipeline-as-code language: schema, positioned YAML loading, validation and lint."""

from leadflow.config.loaded import LoadedConfig
from leadflow.config.schema import PipelineConfig
from leadflow.config.source import ConfigError, Issue
from leadflow.config.validate import load_config

__all__ = ["ConfigError", "Issue", "LoadedConfig", "PipelineConfig", "load_config"]
