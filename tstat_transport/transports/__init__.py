"""The transport registry: built-ins and plugins from the `tstat_transport.transports`
entry-point group, looked up by name."""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import entry_points

from ..errors import ConfigError
from .base import Message, Transport

log = logging.getLogger(__name__)

__all__ = ["BUILTIN", "Message", "Transport", "available", "get_transport"]

# Built-ins are listed here as well as in pyproject.toml so that a source checkout
# that was never installed still finds them, and so a plugin cannot take over a
# built-in name.
BUILTIN = {
    "rabbit": "tstat_transport.transports.rabbit:RabbitTransport",
    "stdout": "tstat_transport.transports.stdout:StdoutTransport",
    "http": "tstat_transport.transports.http:HttpTransport",
}


def _plugins() -> dict[str, str]:
    try:
        eps = entry_points(group="tstat_transport.transports")
    except TypeError:  # Python < 3.10
        eps = entry_points().get("tstat_transport.transports", [])  # type: ignore[arg-type]
    return {ep.name: ep.value for ep in eps}


def available() -> dict[str, str]:
    """Every known transport name mapped to its `module:Class`."""
    return {**_plugins(), **BUILTIN}


def get_transport(name: str) -> type[Transport]:
    """The transport class registered as `name`.

    Raises ConfigError for an unknown name (with a suggestion) or a plugin that fails to load.
    """
    known = available()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown transport {name!r}{hint}; available: {', '.join(sorted(known))}"
        )
    module_name, _, attr = known[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"transport {name!r} ({known[name]}) cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise ConfigError(f"transport {name!r} ({known[name]}) is not a Transport subclass")
    return cls
