"""ACKs that ack_nodelay asks for ride with the reply when the woken code writes one, and
leave alone ACK_HOLD later when it does not (tunnel.connection)."""

import asyncio

import pytest

from paqet.kcp.engine import ACK, PUSH, parse_segments
from paqet.tunnel import connection as tc
from paqet.tunnel.params import TunnelParams
from paqet.wire.datagram import DatagramCodec

pytestmark = pytest.mark.timeout(30)
# fast3 (acknodelay on) with the KCP tick pushed out of the test's way: only the pump and
# the ACK hold send anything here.
P = TunnelParams.for_mode("fast3", key="ack-hold", interval=5000)


def _cmds(wires) -> list[set]:
    codec = DatagramCodec(P.block, P.key)
    out = []
    for w in wires:
        for kcp_bytes, _ in codec.decode(w):
            out.append({seg[1] for seg in parse_segments(kcp_bytes)})
    return out


async def _pair():
    a_out, b_out, streams = [], [], []
    a = tc.TunnelConnection(conv=7, peer=("b", 1), send=lambda w, p: a_out.append(w),
                            params=P, client=True)
    b = tc.TunnelConnection(conv=7, peer=("a", 1), send=lambda w, p: b_out.append(w),
                            params=P, client=False)
    b.set_stream_handler(streams.append)
    return a, b, a_out, b_out, streams


async def _turns(n=8):
    for _ in range(n):
        await asyncio.sleep(0)


async def _deliver(src_out, dst):
    wires = list(src_out)
    src_out.clear()
    for w in wires:
        dst.datagram_received(w)
    dst.pump_now()
    await _turns()


async def _request_delivered():
    """A stream with a request, opened by a and delivered to b: nothing sent back yet (the
    ACK waits, the handler may answer)."""
    a, b, a_out, b_out, streams = await _pair()
    st = a.open_stream()
    st.write(b"request")
    await _turns()
    await _deliver(a_out, b)
    assert streams and b_out == []
    return a, b, b_out, streams


def test_ack_rides_with_the_reply():
    async def main():
        a, b, b_out, streams = await _request_delivered()
        streams[0].write(b"response")
        await _turns()
        cmds = _cmds(b_out)
        a.close()
        b.close()
        return cmds
    cmds = asyncio.run(main())
    assert len(cmds) == 1 and {PUSH, ACK} <= cmds[0]


def test_ack_leaves_alone_after_the_hold():
    async def main():
        a, b, b_out, streams = await _request_delivered()
        await asyncio.sleep(tc.ACK_HOLD + 0.05)
        cmds = _cmds(b_out)
        a.close()
        b.close()
        return cmds
    cmds = asyncio.run(main())
    assert cmds == [{ACK}]
