"""Addresses that stay on the sensor: truncation, or keyed prefix-preserving pseudonyms.

Configured in the `[anonymize]` section of the config file (off by default):

    [anonymize]
    # none | truncate | pseudonymize
    method = truncate
    # truncate: the bits kept of an IPv4 / IPv6 address
    ipv4_prefix = 24
    ipv6_prefix = 48
    # pseudonymize: a file holding 64 hex digits (or 32 raw bytes)...
    key_file = /etc/tstat_transport/anonymize.key
    # ...or the 64 hex digits from the environment
    #key = ${TSTAT_ANONYMIZE_KEY}

`truncate` zeroes the host part (10.10.0.1 -> 10.10.0.0 with /24). `pseudonymize` is
ipcrypt-pfx (IETF draft-denis-ipcrypt): AES-128 based, keyed, prefix-preserving (two
addresses sharing their first n bits still share n bits after it, so subnets can
be aggregated in the archive), the same mapping on every run and every sensor
that has the key; IPv4 stays IPv4. It needs the `cryptography` package
(`pip install 'tstat_transport[anonymize]'`), imported only when configured.

Every flow object then says what was applied in `meta.anonymization`. The key is
never logged and never written anywhere by this tool.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
from functools import lru_cache
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ConfigFile

log = logging.getLogger(__name__)

SECTION = "anonymize"
CONFIG_SECTIONS: dict[str, set[str] | None] = {
    SECTION: {"method", "ipv4_prefix", "ipv6_prefix", "key", "key_file"}
}
METHODS = ("none", "truncate", "pseudonymize")
# Addresses remembered per run: a sensor sees the same ones again and again, and a
# pseudonym costs 64 (IPv4) to 256 (IPv6) AES blocks. About 220 bytes an entry: 4096
# hold a busy sensor's hot addresses in under 1 MB (65536 took 14 MB, and the bench's
# pseudonymize run to 46 MB of its 50 MB memory target).
CACHE_SIZE = 1 << 12
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_V4_MAPPED = 0xFFFF << 32


class Anonymizer:
    """Maps an address (text) to the address sent instead.

    `label` goes into every flow object's meta.anonymization. `apply` raises
    ValueError for text that is not an IP address.
    """

    label: str
    apply: Callable[[str], str]


class Truncate(Anonymizer):
    """Keep the first `ipv4_prefix` / `ipv6_prefix` bits, zero the rest."""

    def __init__(self, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> None:
        if not (0 <= ipv4_prefix <= 32 and 0 <= ipv6_prefix <= 128):
            raise ValueError("prefix out of range")
        self.label = f"truncate/{ipv4_prefix}/{ipv6_prefix}"
        self._masks = {
            4: ((1 << 32) - 1) ^ ((1 << (32 - ipv4_prefix)) - 1),
            6: ((1 << 128) - 1) ^ ((1 << (128 - ipv6_prefix)) - 1),
        }
        self.apply = lru_cache(maxsize=CACHE_SIZE)(self._truncate)

    def _truncate(self, text: str) -> str:
        packed = _packed_ipv4(text)
        if packed is not None:  # the common case, at a fifth of ipaddress's cost
            return inet_ntop(
                AF_INET, (int.from_bytes(packed, "big") & self._masks[4]).to_bytes(4, "big")
            )
        # A scope (fe80::1%eth0) names a host's interface: it goes with the host part.
        return ipv6_text(_ipv6_int(text) & self._masks[6])


class IpcryptPfx(Anonymizer):
    """ipcrypt-pfx: keyed prefix-preserving encryption of IPv4 and IPv6 addresses.

    For each bit of the address (the 32 of an IPv4, mapped into ::ffff:0:0/96, or
    the 128 of an IPv6), one pseudorandom bit is drawn from the bits before it: the
    low bit of AES(K1, p) xor AES(K2, p), where p is those bits with a 1 above them.
    The output bit is the input bit xor that bit, so equal prefixes stay equal.
    Raises ConfigError if `cryptography` is missing, ValueError for a bad key.
    """

    label = "ipcrypt-pfx"

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the key must be 32 bytes (64 hex digits)")
        if key[:16] == key[16:]:
            raise ValueError("the two halves of the key must differ")
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        except ImportError:
            raise ConfigError(
                f"[{SECTION}] method = pseudonymize needs the cryptography package: "
                "pip install 'tstat_transport[anonymize]'"
            ) from None
        # ECB over independent blocks is what the construction asks for: each block
        # is one prefix, encrypted on its own.
        self._aes1 = Cipher(algorithms.AES(key[:16]), modes.ECB()).encryptor().update  # noqa: S305
        self._aes2 = Cipher(algorithms.AES(key[16:]), modes.ECB()).encryptor().update  # noqa: S305
        self.apply = lru_cache(maxsize=CACHE_SIZE)(self._encrypt)

    def _encrypt(self, text: str) -> str:
        packed = _packed_ipv4(text)
        if packed is not None:
            x, first = _V4_MAPPED | int.from_bytes(packed, "big"), 96
        else:
            x, first = _ipv6_int(text), 0
        # The prefixes depend only on the input, so all of them go through AES in
        # one call per key.
        blocks = b"".join(
            ((1 << n) | (x >> (128 - n))).to_bytes(16, "big") for n in range(first, 128)
        )
        flip = 0
        for a, b in zip(self._aes1(blocks)[15::16], self._aes2(blocks)[15::16]):
            flip = (flip << 1) | ((a ^ b) & 1)
        y = x ^ flip
        if y >> 32 == 0xFFFF:  # ::ffff:0:0/96 is written as IPv4, as the draft says
            return inet_ntop(AF_INET, (y & 0xFFFFFFFF).to_bytes(4, "big"))
        return ipv6_text(y)


def _packed_ipv4(text: str) -> bytes | None:
    """The 4 bytes of a dotted-quad IPv4 address, or None for anything else.

    inet_pton takes no leading zeros, as ipaddress; what it refuses goes to ipaddress."""
    try:
        return inet_pton(AF_INET, text)
    except (OSError, ValueError):
        return None


def _ipv6_int(text: str) -> int:
    """An IPv6 address as an integer; ValueError for anything else (IPv4 included)."""
    try:
        return int.from_bytes(inet_pton(AF_INET6, text), "big")
    except (OSError, ValueError):
        return int(ipaddress.IPv6Address(text))  # a scope, or not an address: it decides


def ipv6_text(n: int) -> str:
    """An IPv6 address as ipaddress writes it (RFC 5952), at a fifth of its cost."""
    text = inet_ntop(AF_INET6, n.to_bytes(16, "big"))
    # inet_ntop writes ::ffff:1.2.3.4 and ::1.2.3.4 with a dotted tail; ipaddress does not.
    return text if "." not in text else str(ipaddress.IPv6Address(n))


def parse_key(data: bytes) -> bytes:
    """The 32-byte key from a key file's or variable's content: raw, or 64 hex digits."""
    text = data.strip()
    if _HEX_KEY.fullmatch(text.decode("latin-1")):
        return bytes.fromhex(text.decode("ascii"))
    if len(data) == 32:
        return data
    raise ValueError("expected 64 hex digits or 32 raw bytes")


def from_config(config: ConfigFile) -> Anonymizer | None:
    """The anonymizer the `[anonymize]` section asks for, or None (the default).

    Raises ConfigError naming file, section and key (never the key's value).
    """
    method = config.get_str(SECTION, "method", "none").lower()
    if method not in METHODS:
        raise ConfigError(
            f"{config.name}: [{SECTION}] method = {method!r}: expected one of {', '.join(METHODS)}"
        )
    if method == "none":
        return None
    if method == "truncate":
        return Truncate(
            config.get_int(SECTION, "ipv4_prefix", 24, lo=0, hi=32),
            config.get_int(SECTION, "ipv6_prefix", 48, lo=0, hi=128),
        )
    where = f"{config.name}: [{SECTION}]"
    data, source = _read_key(config, where)
    try:
        return IpcryptPfx(parse_key(data))
    except ValueError as exc:
        raise ConfigError(f"{where} {source}: {exc}") from None


def _read_key(config: ConfigFile, where: str) -> tuple[bytes, str]:
    key_file = config.get_str(SECTION, "key_file", "")
    key_text = config.get_str(SECTION, "key", "")
    if bool(key_file) == bool(key_text):
        raise ConfigError(f"{where} method = pseudonymize needs exactly one of key_file, key")
    if key_file:
        try:
            # Without blocking (a FIFO would hang the run), and only a regular file.
            fd = os.open(key_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            with open(fd, "rb") as f:
                mode = os.fstat(fd).st_mode
                if not stat.S_ISREG(mode):
                    raise ConfigError(f"{where} key_file = {key_file!r}: not a regular file")
                data = f.read(4096)  # a key is 64 bytes: never read a wrong path's whole file
        except OSError as exc:
            raise ConfigError(f"{where} key_file = {key_file!r}: {exc.strerror}") from None
        if mode & 0o077:
            # Whoever reads the key can undo the pseudonyms: say so, as ssh does.
            log.warning(
                "%s key_file %s can be read by other users than its owner (chmod 600 it)",
                where,
                key_file,
            )
        source = f"key_file = {key_file!r}"
    else:
        data, source = key_text.encode("latin-1"), "key"
    return data, source
