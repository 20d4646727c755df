"""The datagram codec of one session: KCP output -> wire datagrams (FEC, CRC32, encryption
as kcp-go frames them) and wire datagrams -> KCP input, with counters for every drop.

Layouts (kcp-go-framing.md §2): non-AEAD blocks
``Encrypt(nonce16 || crc32_le(payload) || payload)``; aes-128-gcm (and our chacha20)
``nonce12 || seal(payload) || tag16``; null: the payload as is. With FEC the payload is the
8-byte FEC header plus KCP bytes, and parity packets follow their group.
"""

from __future__ import annotations

import os
import zlib

from paqet.wire.crypto import derive_key, make_block
from paqet.wire.fec import TYPE_DATA, TYPE_OOB, TYPE_PARITY, FecDecoder, FecEncoder

MIN_PLAIN = 12


class CodecStats:
    __slots__ = ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out", "short", "crc_errors",
                 "auth_errors", "fec_data", "fec_parity", "fec_recovered", "fec_unrecoverable",
                 "fec_mismatched", "oob")

    def __init__(self) -> None:
        for s in self.__slots__:
            setattr(self, s, 0)

    def as_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


class _Nonces:
    """Random nonces from the OS CSPRNG, fetched in batches."""

    def __init__(self, size: int, batch: int = 256) -> None:
        self.size = size
        self.batch = batch * size
        self.buf = b""
        self.pos = 0

    def take(self) -> bytes:
        p = self.pos
        if p + self.size > len(self.buf):
            self.buf = os.urandom(self.batch)
            p = 0
        self.pos = p + self.size
        return self.buf[p:p + self.size]


class DatagramCodec:
    def __init__(self, block: str = "aes", key: str | bytes = "", *, dshard: int = 0,
                 pshard: int = 0) -> None:
        derived = key if isinstance(key, (bytes, bytearray)) else derive_key(key)
        self.block = block
        self.crypt = make_block(block, bytes(derived))
        c = self.crypt
        self.aead = c is not None and c.tag > 0
        self.crypto_header = c.header if c is not None else 0
        self.tag = c.tag if c is not None else 0
        self.fec = dshard > 0 and pshard > 0 and dshard + pshard <= 256
        self.dshard, self.pshard = dshard, pshard
        self.encoder = FecEncoder(dshard, pshard) if self.fec else None
        self.decoder = FecDecoder(dshard, pshard) if self.fec else None
        self.overhead = self.crypto_header + self.tag + (8 if self.fec else 0)
        self.stats = CodecStats()
        self._nonces = _Nonces(12 if self.aead else 16)
        if self.aead:  # imported only here: `cryptography` is not loaded for other ciphers
            from cryptography.exceptions import InvalidTag
            self._invalid_tag = InvalidTag

    def kcp_mtu(self, mtu: int) -> int:
        return min(mtu, 1500) - self.overhead

    # -- crypto layer --------------------------------------------------------------------
    def seal(self, payload: bytes, nonce: bytes | None = None) -> bytes:
        c = self.crypt
        if c is None:
            return payload
        if nonce is None:
            nonce = self._nonces.take()
        if self.aead:
            return nonce + c.aead.encrypt(nonce, payload, None)
        crc = zlib.crc32(payload).to_bytes(4, "little")
        return c.encrypt(nonce + crc + payload)

    def open(self, wire: bytes) -> bytes | None:
        """The plaintext payload, or None (counted) when the datagram is not ours."""
        c = self.crypt
        st = self.stats
        if c is None:
            return wire
        if self.aead:
            if len(wire) < 28:
                st.short += 1
                return None
            try:
                return c.aead.decrypt(wire[:12], wire[12:], None)
            except self._invalid_tag:
                st.auth_errors += 1
                return None
        if len(wire) < 20:
            st.short += 1
            return None
        plain = c.decrypt(wire)
        body = memoryview(plain)[20:]  # no copy: KCP parses it in place
        if zlib.crc32(body) != int.from_bytes(plain[16:20], "little"):
            st.crc_errors += 1
            return None
        return body

    # -- the whole pipeline ----------------------------------------------------------------
    def encode(self, kcp: bytes, now_ms: int = 0) -> list[bytes]:
        st = self.stats
        if self.encoder is None:
            st.datagrams_out += 1
            out = self.seal(kcp)
            st.bytes_out += len(out)
            return [out]
        out = [self.seal(p) for p in self.encoder.encode(kcp, now_ms)]
        st.datagrams_out += len(out)
        for d in out:
            st.bytes_out += len(d)
        return out

    def _fec_decode(self, plain) -> list[bytes]:
        dec = self.decoder
        if dec is None:
            # FEC off here but the peer sends FEC packets: like kcp-go, decode them with a
            # (1, 1) decoder that auto-tunes to the peer's d/p.
            dec = self.decoder = FecDecoder(1, 1)
        rec = dec.decode(plain)
        st = self.stats
        st.fec_recovered += len(rec)
        st.fec_unrecoverable = dec.unrecoverable
        st.fec_mismatched = dec.mismatched
        return rec

    def decode(self, wire: bytes) -> list[tuple[bytes, bool]]:
        st = self.stats
        st.datagrams_in += 1
        st.bytes_in += len(wire)
        plain = self.open(wire)
        if plain is None:
            return []
        if len(plain) < MIN_PLAIN:
            st.short += 1
            return []
        flag = plain[4] | (plain[5] << 8)
        if flag == TYPE_DATA:
            st.fec_data += 1
            out = [(plain[8:], True)]  # always straight to KCP, whatever the decoder thinks
            rec = self._fec_decode(plain)
            if rec:
                out.extend((r, False) for r in rec)
            return out
        if flag == TYPE_PARITY:
            st.fec_parity += 1
            return [(r, False) for r in self._fec_decode(plain)]
        if flag == TYPE_OOB:
            st.oob += 1
            return []
        return [(plain, True)]
