"""Configuration: upstream's YAML keys, defaults and ranges, plus our own (docs/config.md)."""

from paqet.config.loader import ConfigError, load_config, load_config_text
from paqet.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config", "load_config_text"]
