"""Read and validate config.ini and the command-line options.

The only module that touches configparser or os.environ. Values may name
environment variables, as the original tool's users already write them:
`password = ${RABBIT_PASSWORD}` or `${RABBIT_PASSWORD:default}`.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from .errors import ConfigError

log = logging.getLogger(__name__)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_MISSING = object()
T = TypeVar("T")


# How long a directory's logs must have been unchanged before it counts as complete
# (--settle); directories.py states the whole rule.
DEFAULT_SETTLE_SECONDS = 300.0


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, validated before any directory is touched."""

    directory: Path
    threshold_mb: float = 1000.0
    transport: str = "rabbit"
    sensor: str = ""
    instance: str | int = 0
    single: bool = False
    include_newest: bool = False
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    pretty: bool = False
    config_path: Path | None = None

    @property
    def threshold_bits(self) -> float:
        # The original's unit: 1 MB = 8 000 000 bits.
        return self.threshold_mb * 8_000_000


class ConfigFile:
    """An INI file read without configparser's own interpolation.

    Every getter names file, section, key and value in its error.
    An absent file (path None) behaves as an empty one.
    """

    def __init__(self, path: Path | None, environ: Mapping[str, str] | None = None):
        self.path = path
        self.environ = os.environ if environ is None else environ
        self._parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
        self._parser.optionxform = str  # keep `x-queue-type` and friends as written
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    self._parser.read_file(f)
            except FileNotFoundError:
                raise ConfigError(f"{path}: config file not found (use -c/--config)") from None
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
            except (configparser.Error, UnicodeDecodeError) as exc:
                text = " ".join(str(exc).split())
                raise ConfigError(f"{path}: not a valid INI file: {text}") from None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "(no config file)"

    def sections(self) -> list[str]:
        return self._parser.sections()

    def has_section(self, section: str) -> bool:
        return self._parser.has_section(section)

    def raw_keys(self, section: str) -> list[str]:
        return list(self._parser[section]) if self._parser.has_section(section) else []

    def _where(self, section: str, key: str) -> str:
        return f"{self.name}: [{section}] {key}"

    def _expand(self, section: str, key: str, value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in self.environ:
                return self.environ[var]
            if default is not None:
                return default
            raise ConfigError(
                f"{self._where(section, key)}: environment variable {var} is not set "
                "and the value gives no default (write ${" + var + ":default})"
            )

        return _ENV_RE.sub(sub, value)

    def get_str(self, section: str, key: str, default: object = _MISSING) -> str:
        if not self._parser.has_option(section, key):
            if default is _MISSING:
                raise ConfigError(f"{self._where(section, key)}: required key is missing")
            return default  # type: ignore[return-value]
        return self._expand(section, key, self._parser.get(section, key)).strip()

    def _typed(self, section: str, key: str, default: object, conv: Callable[[str], T], want: str):
        if not self._parser.has_option(section, key):
            return self.get_str(section, key, default)
        raw = self.get_str(section, key)
        try:
            return conv(raw)
        except ValueError:
            shown = "<hidden>" if "pass" in key.lower() else repr(raw)
            raise ConfigError(f"{self._where(section, key)} = {shown}: expected {want}") from None

    def get_int(
        self,
        section: str,
        key: str,
        default: object = _MISSING,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int:
        want = "an integer" + (f" {lo}-{hi}" if lo is not None and hi is not None else "")

        def conv(s: str) -> int:
            v = int(s)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ValueError
            return v

        return self._typed(section, key, default, conv, want)

    def get_float(
        self, section: str, key: str, default: object = _MISSING, lo: float | None = None
    ) -> float:
        def conv(s: str) -> float:
            v = float(s)
            if v != v or (lo is not None and v < lo):
                raise ValueError
            return v

        want = "a number" + (f" >= {lo}" if lo is not None else "")
        return self._typed(section, key, default, conv, want)

    def get_bool(self, section: str, key: str, default: object = _MISSING) -> bool:
        return self._typed(section, key, default, parse_bool, "true or false")

    def items(self, section: str) -> dict[str, str]:
        """Every key of `section` with environment variables expanded ({} if absent)."""
        if not self._parser.has_section(section):
            return {}
        return {k: self.get_str(section, k) for k in self._parser[section]}

    def warn_unknown(self, known: Mapping[str, set[str] | None]) -> list[str]:
        """Log (and return) a warning for every section or key nobody reads.

        `known` maps a section to its keys, or to None when any key is allowed.
        """
        warnings = []
        for section in self.sections():
            if section not in known:
                warnings.append(f"{self.name}: unknown section [{section}] is ignored")
                continue
            keys = known[section]
            if keys is None:
                continue
            for key in self.raw_keys(section):
                if key not in keys:
                    warnings.append(f"{self._where(section, key)}: unknown key is ignored")
        for w in warnings:
            log.warning("%s", w)
        return warnings


def parse_bool(text: str) -> bool:
    """`true/false/yes/no/on/off/1/0`, any case; ValueError otherwise."""
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(text)


def parse_scalar(text: str) -> bool | int | float | str:
    """A typed value for free-form keys: bool, int, float, else the string itself."""
    low = text.strip().lower()
    if low in _TRUE - {"1"}:
        return True
    if low in _FALSE - {"0"}:
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text
