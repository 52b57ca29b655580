"""Read and validate config.ini and the command-line options.

The only module that touches configparser or os.environ. Values may name
environment variables, as the original tool's users already write them:
`password = ${RABBIT_PASSWORD}` or `${RABBIT_PASSWORD:default}`.
"""

from __future__ import annotations

import configparser
import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:
    from .anonymize import Anonymizer

log = logging.getLogger(__name__)

# `user:password@` in a URL or host value; group 2 is the password.
_USERINFO_RE = re.compile(r"([^\s:/@,\[\]]+):([^\s@/,]+)@")
# `key`: [anonymize]'s pseudonymisation key.
_SECRET_KEY_RE = re.compile(r"pass|secret|token|auth_value|credential|^key$", re.IGNORECASE)
# A secret key written inside another value (two lines run together: `host = h password = x`);
# group 2 is the secret.
_EMBEDDED_RE = re.compile(r"((?:pass|secret|token|auth_value|credential)\w*\s*[=:]\s*)(\S+)", re.I)
# configparser keeps `value   # note` whole; Tstat configs never need ' #' or ' ;' in a value.
_INLINE_COMMENT_RE = re.compile(r"\s[#;]")
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
    anonymize: Anonymizer | None = None  # from the config's [anonymize]; None sends addresses

    @property
    def threshold_bits(self) -> float:
        # The original's unit: 1 MB = 8 000 000 bits.
        return self.threshold_mb * 8_000_000


class _KeyKeepingParser(configparser.ConfigParser):
    """Keeps keys as written (`x-queue-type` and friends); configparser lowercases them."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


class ConfigFile:
    """An INI file read without configparser's own interpolation.

    Every getter names file, section, key and value in its error.
    An absent file (path None) behaves as an empty one.
    """

    def __init__(self, path: Path | None, environ: Mapping[str, str] | None = None):
        self.path = path
        self.environ = os.environ if environ is None else environ
        self._parser = _KeyKeepingParser(interpolation=None, default_section="\0none")
        self._lines: dict[tuple[str, str], int] = {}  # (section, key) -> line number
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                raise ConfigError(f"{path}: config file not found (use -c/--config)") from None
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"{path}: not a valid INI file: not UTF-8 text") from None
            self._lines = _scan(text, self.name)
            try:
                self._parser.read_string(text, source=self.name)
            except configparser.Error as exc:
                raise ConfigError(_parse_error(self.name, exc)) from None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "(no config file)"

    def sections(self) -> list[str]:
        return self._parser.sections()

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
            shown = mask(key, raw)
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

    def secrets(self) -> set[str]:
        """Values that must never reach any output: those of secret keys (expanded) and
        the password of any `user:password@` in a value. Values shared with a key that
        is not secret (a password equal to its user name) are left out: they are shown
        anyway, and masking them would garble every line that names the user."""
        found: set[str] = set()
        plain: set[str] = set()
        for section in self.sections():
            for key, raw in self._parser[section].items():
                found.update(m.group(2) for m in _USERINFO_RE.finditer(raw))
                found.update(m.group(2) for m in _EMBEDDED_RE.finditer(raw))
                if not _is_secret(key):
                    plain.add(raw.strip())
                    continue
                found.add(raw.strip())
                try:
                    found.add(self._expand(section, key, raw).strip())
                except ConfigError:
                    pass  # unset variable: reported when the key is read
        return {s for s in found - plain if len(s) >= 3}

    def check_unknown(
        self, known: Mapping[str, set[str] | None], others: Iterable[str] = ()
    ) -> list[str]:
        """Refuse a key nobody reads; warn about (and return) sections nobody reads.

        `known` maps a section to its keys, or to None when any key is allowed;
        `others` are sections other transports read (a shared config file keeps them).
        A misspelled key would silently fall back to its default (`hots` connects to
        localhost), so it is a ConfigError with the nearest known key; so is a
        section whose name is close to a known one.
        """
        warnings = []
        for section in self.sections():
            if section in others and section not in known:
                continue
            if section not in known:
                close = difflib.get_close_matches(section, known, n=1, cutoff=0.8)
                if close:
                    raise ConfigError(
                        f"{self.name}: unknown section [{section}] (did you mean [{close[0]}]?)"
                    )
                warnings.append(f"{self.name}: unknown section [{section}] is ignored")
                continue
            keys = known[section]
            if keys is None:
                continue
            for key in self.raw_keys(section):
                if key not in keys:
                    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
                    hint = (
                        f"did you mean {close[0]!r}?"
                        if close
                        else "known keys: " + ", ".join(sorted(keys))
                    )
                    line = self._lines.get((section, key))
                    at = f" (line {line})" if line is not None else ""
                    raise ConfigError(f"{self._where(section, key)}{at}: unknown key ({hint})")
        for w in warnings:
            log.warning("%s", w)
        return warnings


def _is_secret(key: str) -> bool:
    return _SECRET_KEY_RE.search(key) is not None


def mask(key: str, value: str) -> str:
    """`value` as an error message may show it: hidden for a secret key, and with the
    password of any `user:password@` replaced by `***`."""
    if _is_secret(key):
        return "<hidden>"
    return repr(_EMBEDDED_RE.sub(r"\1***", _USERINFO_RE.sub(r"\1:***@", value)))


def _scan(text: str, source: str) -> dict[tuple[str, str], int]:
    """Check what configparser would take silently; return each key's line number.

    An indented line under a key is joined to that key's value (an indented
    `password=...` under `host` would become part of the host name, and be echoed
    with it), and `key = value  # note` keeps the note in the value. Both are errors
    naming the line, never showing its text: it may hold a secret.
    """
    lines: dict[tuple[str, str], int] = {}
    section: str | None = None
    key_indent: int | None = None  # indentation of the key line above, if any
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        if key_indent is not None and indent > key_indent:
            raise ConfigError(
                f"{source} line {number}: indented line, which INI joins to the value of "
                "the key above it: remove the indentation (the line is not shown, it may "
                "hold a secret)"
            )
        if stripped.startswith("["):
            section = stripped[1 : stripped.find("]")] if "]" in stripped else None
            key_indent = None
            continue
        key_indent = indent
        # configparser splits at the first '=' or ':'.
        cut = min((i for i in (stripped.find("="), stripped.find(":")) if i >= 0), default=-1)
        if cut < 0 or section is None:
            continue  # configparser's own error reports it (see _parse_error)
        key, value = stripped[:cut].strip(), stripped[cut + 1 :]
        lines.setdefault((section, key), number)
        if _INLINE_COMMENT_RE.search(value):
            raise ConfigError(
                f"{source} line {number}: [{section}] {key}: the value holds an inline "
                "comment (' #' or ' ;'), which INI keeps as part of the value: move the "
                "comment to a line of its own (a value that really holds ' #' can come "
                "from an environment variable: ${NAME})"
            )
    return lines


def _parse_error(source: str, exc: configparser.Error) -> str:
    """configparser's error without the line's text (it may hold a secret)."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"{source} line {exc.lineno}: a key before any [section] header"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"{source} line {exc.lineno}: [{exc.section}] {exc.option}: set twice"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"{source} line {exc.lineno}: [{exc.section}] appears twice"
    if isinstance(exc, configparser.ParsingError):
        numbers = ", ".join(str(lineno) for lineno, _ in exc.errors)
        return (
            f"{source} line {numbers}: not a `key = value` line (is the '=' missing?); "
            "the line is not shown, it may hold a secret"
        )
    return f"{source}: not a valid INI file"


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
