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
