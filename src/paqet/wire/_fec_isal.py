"""GF(2^8) shard combination through Intel ISA-L (Debian `libisal2`), loaded with ctypes.

ISA-L's `ec_init_tables` + `ec_encode_data` compute out[i] = XOR_c a[i][c] * in[c] over
GF(2^8)/0x11D for ANY coefficient matrix `a`, so given klauspost's encoding matrix (or a
cached inverse for recovery) the bytes are exactly those of the pure-Python path in fec.py.
Optional: when the library is missing, `Combiner` is None and fec.py keeps its own path.

Not thread-safe: one Combiner per FEC encoder/decoder (one per session), as used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["Combiner", "available"]


def _load():
    if os.environ.get("PAQET_NO_ISAL"):
        return None
    for name in ("libisal.so.2", ctypes.util.find_library("isal")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.ec_init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                           ctypes.c_void_p]
            lib.ec_init_tables.restype = None
            lib.ec_encode_data.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            lib.ec_encode_data.restype = None
            return lib
        except (OSError, AttributeError):
            continue
    return None


_LIB = _load()
available = _LIB is not None

#: longest shard handled (a datagram is at most 1500 bytes); longer ones -> None (caller's
#: pure path), so the buffers never grow with what a peer sends
MAX_LEN = 2048


class Combiner:
    """Combines up to `k` input shards into up to `rows` outputs with ISA-L.

    Inputs are copied into one contiguous scratch buffer (one memcpy each: ISA-L needs all
    shards the same length, so short ones are zero-padded there), the matrix's tables are
    built once per matrix and cached by the caller-supplied key."""

    def __init__(self, k: int, rows: int) -> None:
        self.k, self.rows = k, rows
        self._cap = 0
        self._tables: dict = {}
        self._grow(MAX_LEN)

    def _grow(self, cap: int) -> None:
        k, rows = self.k, self.rows
        self._cap = cap
        self._in = ctypes.create_string_buffer(k * cap)
        self._out = ctypes.create_string_buffer(rows * cap)
        self._inv = memoryview(self._in).cast("B")
        self._outv = memoryview(self._out).cast("B")
        base_in, base_out = ctypes.addressof(self._in), ctypes.addressof(self._out)
        self._in_ptrs = (ctypes.c_void_p * k)(*[base_in + i * cap for i in range(k)])
        self._out_ptrs = (ctypes.c_void_p * rows)(*[base_out + i * cap for i in range(rows)])

    def tables(self, key, matrix: list[list[int]]):
        """ISA-L's expanded tables for `matrix` (len(matrix) rows x k columns), cached."""
        t = self._tables.get(key)
        if t is None:
            if len(self._tables) >= 512:
                self._tables.clear()
            n = len(matrix)
            t = ctypes.create_string_buffer(32 * self.k * n)
            _LIB.ec_init_tables(self.k, n, bytes(b for row in matrix for b in row), t)
            t = self._tables[key] = (n, t)
        return t

    def combine(self, tables, shards, length: int) -> list[bytes] | None:
        """out[i] = XOR_c matrix[i][c] * shards[c]; shards shorter than `length` count as
        zero-padded. len(shards) must be k. None when length > MAX_LEN."""
        if length > self._cap:
            return None
        n, t = tables
        cap, inv = self._cap, self._inv
        for i, sh in enumerate(shards):
            off = i * cap
            m = len(sh)
            inv[off:off + m] = sh
            if m < length:
                inv[off + m:off + length] = bytes(length - m)
        _LIB.ec_encode_data(length, self.k, n, t, self._in_ptrs, self._out_ptrs)
        outv = self._outv
        return [bytes(outv[i * cap:i * cap + length]) for i in range(n)]


if not available:  # pragma: no cover - depends on the host
    Combiner = None  # type: ignore[misc,assignment]
