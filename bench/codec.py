"""Datagram codec cost: µs per 1350-byte datagram, encrypt and decrypt for every cipher, and
FEC 10/3 encode/decode, beside a plain bytes copy of the same size measured in the same run.

    .venv/bin/python bench/codec.py [--n 20000]
"""

import argparse
import os
import time

from paqet.wire.crypto import BLOCKS, derive_key
from paqet.wire.datagram import DatagramCodec
from paqet.wire.fec import FecDecoder, FecEncoder

SLOW = {"tea", "xtea"}


def per_call(fn, n, repeat=3):
    """µs per call, best of `repeat` runs (the machine is shared: the minimum is the most
    repeatable figure)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    a = ap.parse_args()
    key = derive_key("bench")
    payload = os.urandom(1350)
    copy_us = per_call(lambda: bytes(bytearray(payload)), a.n)
    print("codec = DatagramCodec.encode/.decode (nonce, CRC, cipher); cipher = the block alone")
    print(f"{'what':<16}{'encrypt µs':>12}{'decrypt µs':>12}{'x copy':>10}"
          f"{'cipher enc':>12}{'cipher dec':>12}  implementation")
    print(f"{'bytes copy':<16}{copy_us:>12.2f}{copy_us:>12.2f}{1:>10.1f}")
    for block in BLOCKS:
        c = DatagramCodec(block, key)
        kcp = payload[:c.kcp_mtu(1350)]
        wire = c.encode(kcp, 0)[0]
        n = max(200, a.n // 50) if block in SLOW else a.n
        enc = per_call(lambda: c.encode(kcp, 0), n)
        dec = per_call(lambda: c.decode(wire), n)
        assert c.decode(wire)[0][0] == kcp
        extra = ""
        blk = c.crypt
        if blk is not None and hasattr(blk, "encrypt"):
            benc = per_call(lambda: blk.encrypt(wire), n)
            bdec = per_call(lambda: blk.decrypt(wire), n)
            extra = f"{benc:>12.2f}{bdec:>12.2f}  {type(blk).__name__}"
        elif blk is not None:
            extra = f"{'':>24}  {type(blk.aead).__name__}"
        print(f"{block:<16}{enc:>12.2f}{dec:>12.2f}{(enc + dec) / 2 / copy_us:>10.1f}{extra}")
    from paqet.wire import _fec_isal
    for accel in ([True] if _fec_isal.available else []) + [False]:
        fec_line(payload, a.n, copy_us, accel)


def fec_line(payload, n, copy_us, accel):
    label = "FEC 10/3 " + ("isal" if accel else "python")
    enc = FecEncoder(10, 3, accel)
    pk = payload[:1322]
    groups = max(200, n // 10)
    t0 = time.perf_counter()
    out = []
    for g in range(groups):
        for i in range(10):
            out.extend(enc.encode(pk, g * 10 + i))
    fec_enc = (time.perf_counter() - t0) / (groups * 10) * 1e6
    dec = FecDecoder(10, 3, accel)
    t0 = time.perf_counter()
    lost = 0
    for i, p in enumerate(out):
        if i % 13 == 0:  # lose one data packet per group: every group needs a recovery
            lost += 1
            continue
        dec.decode(p)
    fec_dec = (time.perf_counter() - t0) / (groups * 10) * 1e6
    assert dec.recovered == lost
    print(f"{label:<16}{fec_enc:>12.2f}{fec_dec:>12.2f}{(fec_enc + fec_dec) / 2 / copy_us:>10.1f}"
          "   (µs per data datagram, amortised; decode recovers one loss per group)")

if __name__ == "__main__":
    main()
