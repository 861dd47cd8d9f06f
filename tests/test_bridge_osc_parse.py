"""The daemon's own OSC parser: every datagram is read in one bounded forward pass, or refused.

The attack that started this: a 20-byte bundle whose element size is -8 made python-osc's
parser loop forever (one core spinning, ~5 MB/s of log), before any token check.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.osc_parse import MAX_DEPTH, MAX_MESSAGES, OscParseError, parse_packet
from bridge.osc_server import LogLimiter, build

from support.bridge_fixtures import InProcessDaemon, OscListener, make_config

CORPUS = Path(__file__).parent / "fuzz_corpus"
NEGATIVE_BUNDLE = b"#bundle\0" + b"\0" * 8 + struct.pack(">i", -8)


def bundle(*elements: bytes) -> bytes:
    return b"#bundle\0" + b"\0" * 8 + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def test_the_negative_size_bundle_is_refused_at_once():
    t0 = time.monotonic()
    with pytest.raises(OscParseError) as e:
        parse_packet(NEGATIVE_BUNDLE)
    assert time.monotonic() - t0 < 0.5
    assert e.value.code == "bad_message" and "-8" in e.value.message


def test_messages_built_by_python_osc_parse_back_to_their_arguments():
    b = OscMessageBuilder("/segue/infill")
    for v in ("/in/a b.wav", 1.5, 7, "steps=3", b"\x01\x02\x03", True, False, None, 2.0 ** 40):
        b.add_arg(v)
    (msg,) = parse_packet(b.build().dgram)
    assert msg.address == "/segue/infill"
    assert msg.args == ("/in/a b.wav", 1.5, 7, "steps=3", b"\x01\x02\x03", True, False, None, 2.0 ** 40)


def test_bundles_are_flattened_in_order_within_the_nesting_limit():
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(OscMessageBuilder("/segue/status").build())
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(OscMessageBuilder("/segue/health").build())
    outer.add_content(inner.build())
    assert [m.address for m in parse_packet(outer.build().dgram)] == ["/segue/health", "/segue/status"]

    deep = build("/segue/health")
    for _ in range(MAX_DEPTH):
        deep = bundle(deep)
    assert len(parse_packet(deep)) == 1
    with pytest.raises(OscParseError, match="nested"):
        parse_packet(bundle(deep))


def test_defects_are_refused_with_a_reason():
    msg = build("/segue/health")
    cases = {
        "zero-size element": bundle(b"") + msg,
        "element past the end": b"#bundle\0" + b"\0" * 8 + struct.pack(">i", 400) + msg,
        "unaligned element": b"#bundle\0" + b"\0" * 8 + struct.pack(">i", 6) + msg,
        "short bundle header": b"#bundle\0\0\0\0\0",
        "unterminated address": b"/segue/heal",
        "negative blob": b"/x\0\0,b\0\0" + struct.pack(">i", -4),
        "huge blob": b"/x\0\0,b\0\0" + struct.pack(">i", 2 ** 31 - 1),
        "cut-off int": b"/x\0\0,ii\0" + b"\0\0\0\1",
        "array tag": b"/x\0\0,[]\0",
        "trailing junk": msg + b"junk",
        "not OSC": b"GET / HTTP/1.1\r\n\r\n",
        "too many messages": bundle(*[msg] * (MAX_MESSAGES + 1)),
    }
    for name, data in cases.items():
        with pytest.raises(OscParseError):
            parse_packet(data)
            pytest.fail(name)


corpus = [f.read_bytes() for f in sorted(CORPUS.glob("*.osc"))]


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """A corpus datagram with a few bytes overwritten, inserted, cut, or a 32-bit field set to a size."""
    def mutate(data: bytes, edits: list) -> bytes:
        b = bytearray(data)
        for kind, pos, value in edits:
            pos = pos % (len(b) + 1)
            if kind == 0 and b:
                b[pos % len(b)] = value & 0xFF
            elif kind == 1:
                b[pos:pos] = bytes([value & 0xFF])
            elif kind == 2:
                del b[pos:pos + 4]
            else:
                b[pos:pos + 4] = struct.pack(">i", value)
        return bytes(b)
    edit = st.tuples(st.integers(0, 3), st.integers(0, 400), st.sampled_from([-8, -4, -1, 0, 4, 8, 2 ** 31 - 1, 255]))
    return st.lists(edit, max_size=4).map(lambda e: mutate(seed, e))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=200), st.sampled_from(corpus).flatmap(mutations)))
@example(data=NEGATIVE_BUNDLE)
@example(data=bundle(NEGATIVE_BUNDLE))
def test_fuzz_the_parser_ends_quickly_with_messages_or_a_parse_error(data):
    t0 = time.monotonic()
    try:
        messages = parse_packet(data)
    except OscParseError as e:
        assert e.code == "bad_message"
    else:
        assert len(messages) <= MAX_MESSAGES
        assert all(m.address.startswith("/") for m in messages)
    assert time.monotonic() - t0 < 0.5


def test_the_corpus_holds_the_negative_size_bundle():
    assert NEGATIVE_BUNDLE in corpus


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("oscd")
    d = InProcessDaemon(root, make_config(root)).start()
    yield d
    d.stop()


def test_a_hostile_bundle_does_not_stop_the_daemon_answering_health(daemon):
    listener = OscListener()
    try:
        for data in (NEGATIVE_BUNDLE, bundle(NEGATIVE_BUNDLE), build("/segue/health")):
            listener.sock.sendto(data, tuple(daemon.osc.address))
        got = listener.collect(lambda m: any(a == "/segue/health" for a, _ in m), timeout_s=10)
    finally:
        listener.close()
    errors = [p for a, p in got if a == "/segue/error"]
    assert len(errors) == 2 and all(p[1] == "bad_message" for p in errors)
    assert any(a == "/segue/health" for a, _ in got)


def test_a_burst_is_read_into_the_inbox_and_every_datagram_answered(daemon):
    assert daemon.osc.rcvbuf > 212992  # larger than Linux's default net.core.rmem_default
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    n = 300
    try:
        for i in range(n):
            client.sendto(build("/segue/status", f"nope-{i}"), tuple(daemon.osc.address))
        answered = set()
        while len(answered) < n:
            (msg,) = parse_packet(client.recvfrom(65536)[0])
            answered.add(msg.args[0] if msg.address == "/segue/error" and msg.args[1] == "unknown_job" else None)
    except socket.timeout:
        pass
    finally:
        client.close()
    assert len(answered) == n and None not in answered


def test_client_caused_log_lines_are_capped(caplog):
    limiter = LogLimiter(logging.getLogger("segue.osc.test"), burst=5, window_s=0.2)
    with caplog.at_level(logging.WARNING, logger="segue.osc.test"):
        for _ in range(1000):
            limiter.warning("send", "could not send to %s", "x")
        time.sleep(0.25)
        limiter.warning("send", "could not send to %s", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("could not send to x") == 6
    assert "995 more OSC log line(s) of kind 'send' were suppressed" in lines

