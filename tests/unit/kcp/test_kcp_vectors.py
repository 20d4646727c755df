"""Every KCP segment recorded from real kcp-go sessions decodes to its recorded fields and
re-encodes to the recorded bytes."""

import json
import os

import pytest

from paqet.kcp.engine import CMD_NAMES, encode_segment, parse_segments

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "vectors", "sessions.json")
SESSIONS = json.load(open(VECTORS))["sessions"]


def kcp_bytes(dg):
    plain = bytes.fromhex(dg["plain"])
    return plain[8:] if "fec_seqid" in dg else plain


@pytest.mark.parametrize("sess", SESSIONS, ids=[s["name"] for s in SESSIONS])
def test_segments_roundtrip(sess):
    checked = 0
    for dg in sess["datagrams"]:
        if not dg.get("kcp_segments"):
            continue
        data = kcp_bytes(dg)
        segs = parse_segments(data)
        assert len(segs) == len(dg["kcp_segments"])
        rebuilt = b""
        for got, want in zip(segs, dg["kcp_segments"]):
            conv, cmd, frg, wnd, ts, sn, una, payload = got
            assert (conv, CMD_NAMES[cmd], frg, wnd, ts, sn, una, len(payload)) == (
                want["conv"], want["cmd"], want["frg"], want["wnd"], want["ts"], want["sn"],
                want["una"], want["len"])
            assert conv == sess["conv"]
            if "data" in want:
                assert payload.hex() == want["data"]
            elif "data_prefix" in want:
                assert payload.hex().startswith(want["data_prefix"])
            else:
                assert payload == b""
            seg = encode_segment(conv, cmd, frg, wnd, ts, sn, una, payload)
            assert seg[:24].hex() == want["header"]
            rebuilt += seg
        assert rebuilt == data[:len(rebuilt)]
        checked += 1
    assert checked > 5


def test_truncated_segment_is_rejected():
    seg = encode_segment(1, 81, 0, 32, 0, 0, 0, b"abcdef")
    with pytest.raises(ValueError):
        parse_segments(seg[:-1])
    with pytest.raises(ValueError):
        parse_segments(seg[:4] + b"\x99" + seg[5:])
