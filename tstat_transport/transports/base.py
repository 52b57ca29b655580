"""The contract between the sender and a transport.

A transport takes messages (a JSON array of at most 100 flow objects each) and
tells the sender, through `on_confirm`, which of them the receiver has accepted.
The sender marks progress only for confirmed messages, so a transport must never
confirm a message it is not sure the receiver holds.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    from ..config import ConfigFile, Settings


@dataclass
class Message:
    """One message: the encoded body and what identifies it.

    `message_id` is deterministic (sensor, instance, directory, log file, chunk
    number), so a consumer can drop the duplicates an interrupted run may resend;
    it is UTF-8 text of at most 255 bytes (AMQP's limit, checked by the sender).
    `token` is the sender's own bookkeeping; transports hand it back untouched.
    """

    body: bytes
    count: int
    message_id: str
    timestamp: int
    headers: dict[str, Any] = field(default_factory=dict)
    token: Any = None


class Transport(abc.ABC):
    """Base class of every transport (built-in or plugin).

    Class attributes state the contract:
    - `name`: the registry key (`-t NAME`).
    - `config_sections`: the config sections it reads, each mapped to its known
      keys (None: any key); unknown keys there are warned about by name.
    - `needs_config`: False when it runs without a config file (stdout).
    - `marks_processed`: False when delivery is not to an archive, so a directory
      must never be marked `.processed` by it (stdout).
    - `window`: how many messages may be unconfirmed at once; the sender blocks
      in `publish` when it is full.

    Lifecycle: `__init__(settings, config)` validates the configuration and does
    no I/O (errors are ConfigError); `open()` connects; `publish(message)` sends
    and may return before the receiver confirmed; `flush()` returns once every
    published message is confirmed; `close()` releases everything and never raises.
    `publish` and `flush` raise TransportError (or TransportUnavailable) on failure,
    after having reported every message confirmed before the failure.
    """

    name: ClassVar[str] = ""
    config_sections: ClassVar[dict[str, set[str] | None]] = {}
    needs_config: ClassVar[bool] = True
    marks_processed: ClassVar[bool] = True
    window: int = 1

    def __init__(self, settings: Settings, config: ConfigFile) -> None:
        self.settings = settings
        self.config = config
        self.on_confirm: Callable[[Message], None] = lambda message: None

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """Where messages go, for log lines (never a password)."""
        return self.name

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def publish(self, message: Message) -> None: ...

    @abc.abstractmethod
    def flush(self) -> None: ...

    def poll(self) -> None:  # noqa: B027 (an optional hook: doing nothing is right)
        """Service the connection while the sender reads without publishing.

        Called by the sender at least every few seconds while it reads rows that
        produce no message (a long log below the threshold), so a transport can
        answer heartbeats and collect confirms; it must return promptly. Raises
        like `publish`. The default does nothing.
        """

    @abc.abstractmethod
    def close(self) -> None: ...

    def check(self) -> str:
        """Connect and verify the destination without sending anything (--check-config).

        Returns a one-line description of what was checked.
        """
        self.open()
        try:
            return f"{self.describe()}: ok"
        finally:
            self.close()
