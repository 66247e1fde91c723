"""The project's typed errors; the CLI turns each into one line and an exit code."""
from __future__ import annotations


class ClickstreamError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(ClickstreamError):
    """Settings, a YAML file or a column mapping is invalid."""

    exit_code = 2


class InputError(ClickstreamError):
    """An input file is missing, unreadable or (under --strict) has a bad row."""

    exit_code = 3


class BrokerUnavailable(ClickstreamError):
    """No Kafka broker answered at the configured bootstrap servers."""

    exit_code = 4


class AuthenticationFailed(BrokerUnavailable):
    """A broker answered, but the security settings do not match it: credentials, mechanism, protocol, TLS."""


class DecodeError(ClickstreamError):
    """Bytes that are not a valid message of the expected schema."""

    exit_code = 5


class ModelError(ClickstreamError):
    """A model artifact is missing, corrupt or incompatible."""

    exit_code = 6
