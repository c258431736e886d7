"""The envelope every actor message shares, and its wire form.

A message is a frozen msgspec struct tagged with its class name, so one JSON document says
both what it is and what it carries: the runtime stores that document in the outbox and the
event log, and decodes it again after a crash. Every message has an `idem_key`, derived by
the sender from what the message is about, never random: a message re-sent after a crash or
delivered twice carries the same key, and the receiver applies it once.

There is no global registry of message types. Each actor declares the types it accepts
(`Actor.accepts`), and the runtime decodes a stored message with exactly that list, so a
message can only ever be decoded into something its receiver knows how to apply.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Union

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every actor message; subclasses are tagged with their class name."""

    idem_key: str


def message_kind(message: Message | type[Message]) -> str:
    """The tag a message is stored under (its class name): the `kind` column of the log."""
    cls = message if isinstance(message, type) else type(message)
    return cls.__struct_config__.tag  # type: ignore[return-value]


_encoder = msgspec.json.Encoder()


def encode_message(message: Message) -> bytes:
    """JSON with the tag, e.g. ``{"type":"Increment","idem_key":"k","amount":1}``."""
    return _encoder.encode(message)


def decode_message(data: bytes | str, types: Iterable[type[Message]]) -> Message:
    """Decode `data` as one of `types`; anything else is a `msgspec.ValidationError`."""
    return _decoder_for(tuple(types)).decode(data)


@functools.lru_cache(maxsize=64)
def _decoder_for(types: tuple[type[Message], ...]) -> msgspec.json.Decoder:
    if not types:
        raise ValueError("decode_message needs at least one message type to decode into")
    return msgspec.json.Decoder(Union[types])  # type: ignore[valid-type]
