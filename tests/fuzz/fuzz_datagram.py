"""Fuzz target: paqet.wire.datagram DatagramCodec.decode, every cipher family (none and null
included), FEC off and on.

Input: a cipher byte, a mode byte (FEC setting; whether each record is first sealed with the
right key so the fuzzer reaches the FEC/KCP layers under a real cipher), then records (a
length byte, then the datagram). Property: decode never raises, returns (payload, regular)
pairs no longer than the datagram (recovered ones: than the longest so far), at most
1 + dshard of them, and afterwards a valid
datagram still decodes to its KCP bytes (garbage does not corrupt the codec)."""

from _common import instrumented, main, pack_records, records

from paqet.wire.crypto import BLOCKS  # noqa: E402 (ciphers: not instrumented)

with instrumented(__name__, ("paqet.wire.datagram", "paqet.wire.fec")):
    from paqet.wire import datagram as _dg, fec as _fec
    from paqet.wire.datagram import DatagramCodec

# Speed: cipher objects and Reed-Solomon matrices are immutable after construction (per-call
# buffers and bounded inverse caches aside), so the target builds each once; the codec and
# FEC state that decode() changes is still fresh for every input.
_blocks: dict = {}
_rs: dict = {}
_make_block, _ReedSolomon = _dg.make_block, _fec.ReedSolomon


def _cached_block(name, derived, accel=True):
    key = (name, bytes(derived), accel)
    if key not in _blocks:
        _blocks[key] = _make_block(name, derived, accel)
    return _blocks[key]


def _cached_rs(d, p, accel=True):
    key = (d, p, accel)
    if key not in _rs:
        _rs[key] = _ReedSolomon(d, p, accel)
    return _rs[key]


_tx: dict = {}  # senders: their FEC sequence numbers do not matter to the properties

KEY = bytes(range(32))  # a derived key (PBKDF2 is the slow part, not what is fuzzed here)
FEC = ((0, 0), (1, 1), (3, 2), (10, 3))
PROBE = b"\x07\x00\x00\x00\x51\x00\x20\x00" + bytes(16) + b"probe"


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    # the caches are swapped in for this call only: other tests in a pytest process see the
    # modules untouched
    _dg.make_block, _fec.ReedSolomon = _cached_block, _cached_rs
    try:
        _one_input(data)
    finally:
        _dg.make_block, _fec.ReedSolomon = _make_block, _ReedSolomon


def _one_input(data: bytes) -> None:
    block = BLOCKS[data[0] % len(BLOCKS)]
    d, p = FEC[data[1] & 3]
    sealed = bool(data[1] & 4)
    rx = DatagramCodec(block, KEY, dshard=d, pshard=p)
    tx = _tx.get((block, d, p))
    if tx is None:
        tx = _tx[(block, d, p)] = DatagramCodec(block, KEY, dshard=d, pshard=p)
    nonce = bytes(12 if tx.aead else 16)
    fed = longest = 0
    for rec in records(data[2:], 24):
        wire = tx.seal(rec, nonce) if sealed else rec
        out = rx.decode(wire)
        fed += 1
        longest = max(longest, len(wire))
        assert len(out) <= 1 + max(d, 1)
        for payload, regular in out:
            assert isinstance(regular, bool)
            # a recovered shard is as long as its group's longest, not the one completing it
            assert len(payload) <= (len(wire) if regular else longest)
    assert rx.stats.datagrams_in == fed
    got = []
    for i, wire in enumerate(tx.encode(PROBE, 1000)):
        got.extend(bytes(x) for x, regular in rx.decode(wire) if regular)
    assert PROBE in got, (block, d, p, got)


def seeds() -> list[bytes]:
    out = []
    for i, block in enumerate(BLOCKS):
        for f in range(4):
            d, p = FEC[f]
            tx = DatagramCodec(block, KEY, dshard=d, pshard=p)
            wires = [w for n in range(4) for w in tx.encode(PROBE + bytes((n,)) * n, n)]
            out.append(bytes((i, f)) + pack_records(wires))
            if tx.encoder is not None:
                plain = DatagramCodec("null", KEY, dshard=d, pshard=p)
                raw = [w for n in range(4) for w in plain.encode(PROBE + bytes((n,)), n)]
                out.append(bytes((i, f | 4)) + pack_records(raw))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
