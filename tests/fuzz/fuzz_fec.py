"""Fuzz target: paqet.wire.fec FecDecoder (grouping, recovery, auto-tuning to the peer's
shard counts).

Input: a selector byte (our d/p; mode) then records. Raw mode: each record is a FEC packet
as decrypted off the wire. Lossy mode: each record is a KCP payload, encoded by a real
FecEncoder, and the next byte says which packets are lost. Property: never raises; memory
stays within KEEP_GROUPS + 1 groups of at most d + p shards and the fixed sample window;
recovered payloads are never longer than the packets; in lossy mode every recovered payload
is one that was sent (recovery never invents data)."""

from _common import instrumented, main, pack_records, records

with instrumented(__name__, ("paqet.wire.fec",)):
    from paqet.wire import fec

FEC = ((1, 1), (2, 1), (3, 2), (10, 3))
_rs: dict = {}
_ReedSolomon = fec.ReedSolomon


def _cached_rs(d, p, accel=True):
    """Matrices are immutable: built once per (d, p) (inverse caches are bounded)."""
    key = (d, p, accel)
    if key not in _rs:
        _rs[key] = _ReedSolomon(d, p, accel)
    return _rs[key]




def _check(dec, out, longest):
    assert len(dec.groups) <= dec.KEEP_GROUPS + 1
    assert all(len(g) <= dec.d + dec.p for g in dec.groups.values())
    assert len(dec.done) <= dec.KEEP_GROUPS + 1
    assert len(dec.samples) <= fec.AUTOTUNE_SAMPLES
    for r in out:
        assert len(r) <= longest


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    fec.ReedSolomon = _cached_rs  # for this call only (pytest runs other tests in-process)
    try:
        _one_input(data)
    finally:
        fec.ReedSolomon = _ReedSolomon


def _one_input(data: bytes) -> None:
    sel = data[0]
    d, p = FEC[sel & 3]
    dec = fec.FecDecoder(d, p)
    if not sel & 4:
        longest = 0
        for pkt in records(data[1:], 400):
            longest = max(longest, len(pkt))
            _check(dec, dec.decode(pkt), longest)
        return
    mask = data[1]
    payloads = [r for r in records(data[2:], 40) if r]
    enc = fec.FecEncoder(d, p)
    sent = set(payloads)
    i = 0
    longest = 0
    for kcp in payloads:
        for pkt in enc.encode(kcp, 1):
            i += 1
            longest = max(longest, len(pkt))
            if (mask >> (i % 8)) & 1 and i % 3:
                continue  # lost
            out = dec.decode(pkt)
            _check(dec, out, longest)
            for r in out:
                assert bytes(r) in sent, (d, p, r)


def seeds() -> list[bytes]:
    out = []
    for f, (d, p) in enumerate(FEC):
        enc = fec.FecEncoder(d, p)
        kcps = [bytes((n,)) * (24 + n) for n in range(12)]
        pkts = [pk for k in kcps for pk in enc.encode(k, 1)]
        out.append(bytes((f,)) + pack_records(pkts))
        out.append(bytes((f | 4, 0x55)) + pack_records(kcps))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
