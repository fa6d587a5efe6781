"""The one exception tree of chaosloco.

A user mistake (bad scenario, bad flag) is a ConfigError and is shown as one line with
exit code 2; infrastructure trouble (no Docker daemon, a node that never became ready)
is an InfraError, exit 3; a failed resilience check is CheckFailed, exit 1.
"""
from __future__ import annotations


class ChaoslocoError(Exception):
    """Base of every error chaosloco raises on purpose."""

    exit_code = 3


class ConfigError(ChaoslocoError):
    """Bad input from the user: names the file, the key and the value."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 value: object = None) -> None:
        self.file, self.key, self.value = file, key, value
        where = ": ".join(p for p in (file, key) if p)
        text = f"{where}: {message}" if where else message
        if value is not None:
            text += f" (got {value!r})"
        super().__init__(text)


class InfraError(ChaoslocoError):
    """The machinery failed: a daemon, a process, a port, a deadline."""

    exit_code = 3


class CheckFailed(ChaoslocoError):
    """At least one resilience check failed."""

    exit_code = 1
