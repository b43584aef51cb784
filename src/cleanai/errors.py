"""Exceptions raised by CleanAI. Every message names the thing, the bad value and what would work."""

from __future__ import annotations


class CleanAIError(Exception):
    """Base class of every error CleanAI raises on purpose."""


class UnknownNameError(CleanAIError, ValueError):
    """A name looked up in a registry (model, loss, optimizer, ...) does not exist."""


class UnknownArgumentError(UnknownNameError, TypeError):
    """A registered factory was given a keyword argument it does not take (or lacks a required one)."""


class CheckpointError(CleanAIError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


class DataError(CleanAIError, ValueError):
    """A data directory or file is missing or malformed."""


class TrainingError(CleanAIError, RuntimeError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class OutputError(CleanAIError, ValueError):
    """An output path cannot be written, or holds something CleanAI must not replace."""


class ConfigError(CleanAIError, ValueError):
    """A setting (a CLI option, a config file or a config value) is malformed or out of range."""


class InputError(CleanAIError, ValueError, TypeError):
    """A model or its example input does not fit what a function needs (None, wrong type, shape or modality)."""


class MissingFileError(CleanAIError, FileNotFoundError):
    """A file the caller named (an ONNX graph, a rows file) does not exist."""
