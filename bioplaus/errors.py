"""Exceptions that bioplaus raises on bad input, with messages that name the problem and the fix."""

from __future__ import annotations


class BioplausError(Exception):
    """Base class of every error bioplaus raises on purpose."""


class ConfigError(BioplausError, ValueError):
    """A configuration key, value, rule, model or task name is invalid.

    The message names the offending key or value and what is allowed. The CLI turns it into a
    one-line message and exit status 2.
    """


class DataError(BioplausError, OSError):
    """A data set is missing, truncated or corrupt. The message names the file and how to get it."""


class ShapeError(BioplausError, ValueError):
    """A tensor has a shape that a layer, rule or task cannot use."""


class DivergedError(BioplausError, ArithmeticError):
    """Training produced a non-finite loss; the run is reported as diverged, never continued."""
