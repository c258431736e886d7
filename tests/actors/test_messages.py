"""The message envelope: tagged JSON that decodes only into the types a receiver accepts."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.actors.messages import Message, decode_message, encode_message, message_kind


class Increment(Message, frozen=True, kw_only=True):
    amount: int


class Rename(Message, frozen=True, kw_only=True):
    to: str
    tags: tuple[str, ...] = ()


keys = st.text(min_size=1, max_size=20)
increments = st.builds(Increment, idem_key=keys, amount=st.integers(-(2**63), 2**63 - 1))
renames = st.builds(Rename, idem_key=keys, to=st.text(max_size=20), tags=st.lists(st.text(max_size=5), max_size=3).map(tuple))


@settings(max_examples=200, deadline=None)
@given(st.one_of(increments, renames))
def test_a_message_decodes_back_to_itself(message: Message) -> None:
    data = encode_message(message)
    assert decode_message(data, [Increment, Rename]) == message
    assert decode_message(data, (type(message),)) == message
    assert msgspec.json.decode(data)["type"] == message_kind(message) == type(message).__name__


@settings(max_examples=100, deadline=None)
@given(increments)
def test_a_message_never_decodes_into_a_type_its_receiver_does_not_accept(message: Increment) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_message(encode_message(message), [Rename])


def test_kind_is_the_class_name_and_messages_are_frozen() -> None:
    message = Increment(idem_key="k", amount=1)
    assert message_kind(message) == message_kind(Increment) == "Increment"
    with pytest.raises(AttributeError):
        message.amount = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="at least one"):
        decode_message(encode_message(message), [])
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"type":"Increment","amount":1}', [Increment])  # no idem_key
