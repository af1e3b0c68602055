"""User-facing errors: each names the file, key or row at fault and how to fix it."""

from __future__ import annotations


class CmcrError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback."""


class ConfigError(CmcrError):
    """A configuration key or value is invalid."""


class StoreError(CmcrError):
    """An embedding store (or .npy matrix) is missing, unreadable or malformed."""


class CheckpointError(CmcrError):
    """A checkpoint file is unreadable or of the wrong kind."""


class InputError(CmcrError):
    """An input file (image, audio, video, text table) is missing, unreadable or corrupt."""


class MissingDependencyError(CmcrError):
    """An optional package is needed for this feature; the message names what to pip install."""


class TrainingError(CmcrError):
    """Training cannot go on (e.g. the loss became NaN); nothing unfinished is saved."""
