"""User-facing errors: one clear message that names the field, file or line and says what to do."""

from __future__ import annotations


class PretrainlabError(Exception):
    """A fatal problem caused by the user's input (config, file, checkpoint).

    The CLI prints the message (no traceback) and exits with `exit_code`.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  what to do: {hint}")


class ConfigError(PretrainlabError):
    """An invalid config value, unknown key or inconsistent combination."""


class DataError(PretrainlabError):
    """An unusable data source, tokenizer file or prepared-data folder."""


class CheckpointError(PretrainlabError):
    """A checkpoint that is missing, truncated, altered or incompatible."""
