"""Publisher-confirm bookkeeping for one AMQP channel, with no I/O.

The broker numbers the messages published on a confirm-mode channel 1, 2, 3...
(delivery tags) and settles them with `basic.ack` or `basic.nack`, either one tag or,
with `multiple`, every tag up to and including it. A message that reaches no queue
is first sent back with `basic.return` (which carries no tag, only the message's
properties) and then acked: it counts as returned, not confirmed.

The tracker turns those events into what the transport needs: which messages are
confirmed (held by a queue), which were refused (nack) and which were returned, and
which are still unconfirmed when a channel is lost. It does no I/O and knows nothing
of pika, so every interleaving can be tested deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Message


@dataclass
class Settled:
    """What one ack or nack settled, in publish order."""

    confirmed: list[Message] = field(default_factory=list)
    nacked: list[Message] = field(default_factory=list)
    returned: list[tuple[Message, str]] = field(default_factory=list)


class ConfirmTracker:
    """The unconfirmed messages of one channel, by delivery tag."""

    def __init__(self) -> None:
        # Delivery tag -> message. Tags only grow, so the dict is in tag order.
        self._pending: dict[int, Message] = {}
        self._returned: dict[int, str] = {}  # tag -> why the broker returned it
        self._last_tag = 0

    def __len__(self) -> int:
        return len(self._pending)

    def published(self, message: Message) -> int:
        """Record `message` as published; return its delivery tag."""
        self._last_tag += 1
        self._pending[self._last_tag] = message
        return self._last_tag

    def returned(self, message_id: str | None, why: str) -> bool:
        """Record a basic.return; False when no unconfirmed message has that id.

        A return comes before the ack of the same message, so it belongs to the oldest
        unconfirmed message with that id that is not already marked returned.
        """
        for tag, message in self._pending.items():
            if message.message_id == message_id and tag not in self._returned:
                self._returned[tag] = why
                return True
        return False

    def settle(self, delivery_tag: int, multiple: bool, ack: bool) -> Settled:
        """Apply a basic.ack (`ack`) or basic.nack; tags not pending are ignored."""
        if multiple:
            tags = []
            for tag in self._pending:
                if tag > delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [delivery_tag] if delivery_tag in self._pending else []
        settled = Settled()
        for tag in tags:
            message = self._pending.pop(tag)
            why = self._returned.pop(tag, None)
            if why is not None:
                settled.returned.append((message, why))
            elif ack:
                settled.confirmed.append(message)
            else:
                settled.nacked.append(message)
        return settled

    def take_unconfirmed(self) -> list[Message]:
        """Every unconfirmed message in publish order, forgotten here: the channel is gone.

        A new channel numbers its messages from 1 again.
        """
        messages = list(self._pending.values())
        self._pending.clear()
        self._returned.clear()
        self._last_tag = 0
        return messages
