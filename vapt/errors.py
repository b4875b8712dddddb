"""Errors raised for bad user input: each message names the file, field or value and what was expected."""


class VaptError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class ConfigError(VaptError, ValueError):
    """An invalid option, method name or configuration value."""


class WeightsError(VaptError, FileNotFoundError):
    """Pre-trained weights that are missing, unreachable or do not fit the backbone."""


class DataLayoutError(VaptError, ValueError):
    """A dataset folder, split file, line, label or image that does not match the expected layout."""
