"""Errors the CLI turns into one line and an exit code (no traceback unless --debug)."""

from __future__ import annotations


class YBError(Exception):
    """Base class: ``exit_code`` tells the CLI how to leave."""

    exit_code = 1


class UsageError(YBError):
    """Bad usage or bad input (a malformed size, an unknown block, a broken file): exit 2."""

    exit_code = 2


class CheckFailed(YBError):
    """Good input that fails: the block raised, a probe or a budget failed: exit 1."""

    exit_code = 1
