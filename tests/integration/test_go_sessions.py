"""Wire compatibility without a Go peer: what real Go paqet clients sent, fed into our server
stack (codec -> KCP -> smux -> app messages), yields the recorded streams and messages; and
our client's first datagrams have the structure a Go server expects."""

import json
import os
import struct

import pytest

from paqet.kcp.engine import KCP, PUSH, parse_segments
from paqet.proto import appmsg
from paqet.smux import events as sev
from paqet.smux.session import SYN, PSH, SmuxSession, parse_frames
from paqet.wire.datagram import DatagramCodec
from paqet.wire.frame import parse_frame

VEC = os.path.join(os.path.dirname(__file__), "..", "vectors")
SESSIONS = json.load(open(os.path.join(VEC, "sessions.json")))["sessions"]
LIVE = json.load(open(os.path.join(VEC, "frames.json")))["live_capture"]["frames"]


class ServerSide:
    """Our server's layers for one peer, without I/O."""

    def __init__(self, block, key, d=0, p=0, conv=None):
        self.codec = DatagramCodec(block, key, dshard=d, pshard=p)
        self.kcp = None
        self.conv = conv
        self.smux = SmuxSession(client=False)
        self.stream_bytes = b""
        self.data: dict[int, bytes] = {}
        self.opened = []

    def feed(self, wire, now):
        for kcp_bytes, regular in self.codec.decode(wire):
            if self.kcp is None:
                self.kcp = KCP(struct.unpack_from("<I", kcp_bytes)[0])
                self.kcp.set_wndsize(1024, 1024)
                self.kcp.set_mtu(self.codec.kcp_mtu(1350))
                self.kcp.stream = True
            self.kcp.input(kcp_bytes, now, regular)
        if self.kcp is None:
            return
        while (d := self.kcp.recv()):
            self.stream_bytes += d
            self.smux.receive_data(d, now)
        while (e := self.smux.next_event()) is not None:
            if isinstance(e, sev.StreamOpened):
                self.opened.append(e.sid)
                self.data[e.sid] = b""
            elif isinstance(e, sev.DataReceived):
                self.data[e.sid] += e.data
                self.smux.stream_consumed(e.sid, len(e.data))

    def messages(self):
        out = {}
        for sid, data in self.data.items():
            if data:
                r = appmsg.MessageReader("auto")
                out[sid] = (r.feed(data), r.rest, r.dialect)
        return out


def want_msg(m):
    if m["type"] == 3:
        return appmsg.TcpFlags(tuple(sum(1 << i for i, f in enumerate(
            ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")) if t[f]) for t in m["tcpf"]))
    return appmsg.TcpConnect(m["host"], m["port"])


@pytest.mark.parametrize("sess", SESSIONS, ids=lambda s: s["name"])
def test_recorded_go_client_through_our_server_stack(sess):
    srv = ServerSide(sess["block"], sess["key_string"], int(sess["data_shards"] or 0),
                     int(sess["parity_shards"] or 0))
    for dg in sess["datagrams"]:
        if dg["dir"] == "c2s":
            srv.feed(bytes.fromhex(dg["wire"]), int(float(dg["t_ms"])))
    assert srv.kcp.conv == sess["conv"]
    assert srv.stream_bytes.hex() == sess["c2s_smux_stream"]
    assert srv.opened == [3, 5]
    msgs = srv.messages()
    for m in sess["server_saw_app_messages"]:
        msg, rest, dialect = msgs[m["sid"]]
        assert msg == want_msg(m) and dialect == "alpha21"
    # stream 5 carries PTCP then the client's 3000 bytes (i*7 mod 256)
    assert msgs[5][1] == bytes((i * 7) % 256 for i in range(3000))


def test_live_capture_of_real_go_peers():
    """57 frames captured between the real Go client and server over a veth: our frame
    parser and server stack see PTCPF, the empty probe stream, PTCPF again and PTCP."""
    srv = ServerSide("aes", "test-key")
    for f in LIVE:
        if f["dir"] != "c2s":
            continue
        p = parse_frame(bytes.fromhex(f["frame"]))
        assert p is not None and p.dst_port == 9999
        srv.feed(p.payload, 0)
    assert srv.opened == [3, 5, 7, 9]
    msgs = srv.messages()
    assert msgs[3][0] == appmsg.TcpFlags((0x18,)) and msgs[7][0] == appmsg.TcpFlags((0x18,))
    assert 5 not in msgs  # the empty liveness probe
    assert msgs[9][0] == appmsg.TcpConnect("127.0.0.1", 18080)
    assert msgs[9][1] == bytes((i * 7) % 256 for i in range(3000))


@pytest.mark.parametrize("dialect", ["alpha21", "alpha20", "gob"])
def test_our_client_first_datagrams_have_go_structure(dialect):
    """What our client stack emits for PTCPF + PTCP, decrypted as kcp-go would."""
    tx = DatagramCodec("aes", "test-key")
    k = KCP(0x12345678)
    k.set_nodelay(1, 10, 2, 1)
    k.set_wndsize(128, 512)
    k.set_mtu(tx.kcp_mtu(1350))
    k.stream = True
    s = SmuxSession(client=True)
    sid = s.open_stream()
    s.send_data(sid, appmsg.encode(appmsg.TcpFlags((0x18,)), dialect))
    s.close_stream(sid)
    sid2 = s.open_stream()
    s.send_data(sid2, appmsg.encode(appmsg.TcpConnect("198.18.1.2", 8080), dialect))
    k.send(s.data_to_send())
    k.flush(0)
    wires = [w for d in k.datagrams_to_send() for w in tx.encode(d, 0)]
    rx = DatagramCodec("aes", "test-key")
    stream = b""
    for w in wires:
        assert len(w) <= 1350
        [(kcp_bytes, regular)] = rx.decode(w)
        assert regular
        for conv, cmd, frg, wnd, ts, sn, una, data in parse_segments(kcp_bytes):
            assert conv == 0x12345678 and cmd == PUSH and frg == 0 and wnd == 512
            stream += data
    frames = parse_frames(stream, 2)
    by_sid: dict[int, list] = {}
    for _, c, sid_, payload in frames:
        by_sid.setdefault(sid_, []).append((c, payload))
    # per stream (smux's shaper, like ours, may put control frames of other streams first):
    # SYN, then the app message as one PSH frame, then FIN for the PTCPF stream
    assert [c for c, _ in by_sid[3]] == [SYN, PSH, 1]
    assert by_sid[3][1][1] == appmsg.encode(appmsg.TcpFlags((0x18,)), dialect)
    assert [c for c, _ in by_sid[5]] == [SYN, PSH]
    assert appmsg.decode(by_sid[5][1][1], dialect) == appmsg.TcpConnect("198.18.1.2", 8080)
