"""The QMP input splitter: messages cut where the top-level value closes,
whatever the chunking, with or without newlines."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from xbzrle.monitor.jsonstream import MAX_DEPTH, Invalid, JsonSplitter

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)
messages = st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4),
                    min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(messages, st.data())
def test_any_chunking_yields_the_same_messages(objs, data):
    wire = b"".join(json.dumps(o).encode() + data.draw(st.sampled_from([b"", b"\n", b" \r\n"]))
                    for o in objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    splitter = JsonSplitter()
    out: list[object] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        out += splitter.feed(wire[lo:hi])
    assert [json.loads(t) for t in out] == objs


def test_messages_need_no_newline_like_qemu_qmp_sends_them():
    got = JsonSplitter().feed(b'{"execute":"a"}{"execute":"b"}')
    assert got == ['{"execute":"a"}', '{"execute":"b"}']


def test_braces_and_escaped_quotes_inside_strings_do_not_cut():
    text = r'{"command-line": "say \"}{\" \\", "x": ["]"]}'
    assert JsonSplitter().feed(text.encode()) == [text]


def test_a_message_over_several_lines_is_one_message():
    splitter = JsonSplitter()
    assert splitter.feed(b'{"execute":\n') == []
    assert splitter.feed(b'  "stop"\n}\n') == ['{"execute":\n  "stop"\n}']


def test_stray_tokens_come_out_whole_for_an_error_reply():
    assert JsonSplitter().feed(b'hello {"a": 1}') == ["hello", '{"a": 1}']


def test_too_deep_nesting_is_refused_then_the_stream_resynchronises():
    splitter = JsonSplitter()
    got = splitter.feed(b"[" * (MAX_DEPTH + 1) + b"\n" + b'{"execute":"stop"}')
    assert isinstance(got[0], Invalid) and "nesting" in got[0].reason
    assert got[1:] == ['{"execute":"stop"}']
