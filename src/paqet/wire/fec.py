"""kcp-go's forward error correction: its 8-byte header, shard grouping and seqid rules, and
the Reed–Solomon code of klauspost/reedsolomon's default `New(d, p)` (GF(2^8), polynomial
0x11D, Vandermonde matrix times the inverse of its top square), so parity is byte-identical.

Packets here exclude the crypto header: a data packet is seqid(4 LE) 0x00F1(2 LE)
size(2 LE, = 2 + len(kcp)) kcp...; a parity packet is seqid 0x00F2 parity-shard.
"""

from __future__ import annotations

import functools
import struct
from collections import deque
from typing import TYPE_CHECKING

from . import _fec_isal

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where it is used, not here: only the fallback combiner without ISA-L and
# the set-up of large codes (matrices over SMALL_MATRIX rows) need it, and importing it costs
# ~0.1 s and ~12 MB of RSS per process (an idle FEC client: 67 -> 55 MB without it).
SMALL_MATRIX = 32

TYPE_DATA, TYPE_PARITY, TYPE_OOB = 0xF1, 0xF2, 0xF3
HEADER = 8
MAX_ENCODE_LATENCY_MS = 500
_HDR = struct.Struct("<IHH")
_SEQ_FLAG = struct.Struct("<IH")

# -- GF(2^8) -------------------------------------------------------------------------------
_EXP = [0] * 512
_LOG = [0] * 256
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]


def gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("GF(256) inverse of 0")
    return _EXP[255 - _LOG[a]]


def gf_pow(a: int, n: int) -> int:
    if n == 0:
        return 1
    if a == 0:
        return 0
    return _EXP[(_LOG[a] * n) % 255]


@functools.cache
def _mul_tables():
    """(MUL, MUL_T): MUL[a][b] = a*b as a numpy array; MUL_T[c] a bytes.translate table
    mapping every byte b to c*b in GF(2^8). Built on first use."""
    import numpy as np
    mul = np.array([[gf_mul(a, b) for b in range(256)] for a in range(256)], dtype=np.uint8)
    return mul, [bytes(mul[c]) for c in range(256)]


def __getattr__(name: str):
    if name in ("MUL", "MUL_T"):
        return _mul_tables()[name == "MUL_T"]
    raise AttributeError(name)


def _combine_bytes(coefs: list[list[int]], shards: list[bytes], length: int) -> list[bytes]:
    """out[i] = XOR_c coefs[i][c] * shards[c] over GF(2^8): one bytes.translate through a
    256-byte multiplication table per (row, shard), then one numpy XOR-reduce per row over
    the joined products. No Python loop over bytes; measured per 10/3 group against one
    big-integer XOR per product: 70 -> 45 us (numpy fancy-index gather: ~3x slower)."""
    import numpy as np
    out = []
    xor_reduce, frombuffer, u8 = np.bitwise_xor.reduce, np.frombuffer, np.uint8
    MUL_T = _mul_tables()[1]
    for row in coefs:
        prods = [sh if coef == 1 else sh.translate(MUL_T[coef])
                 for coef, sh in zip(row, shards) if coef]
        if not prods:
            out.append(bytes(length))
        elif len(prods) == 1:
            out.append(bytes(prods[0]))
        else:
            a = frombuffer(b"".join(prods), u8).reshape(len(prods), length)
            out.append(xor_reduce(a, axis=0).tobytes())
    return out


def _row_times(f: int, row: list[int]) -> list[int]:
    """f * row over GF(2^8)."""
    if f == 0:
        return [0] * len(row)
    lf = _LOG[f]
    return [_EXP[lf + _LOG[y]] if y else 0 for y in row]


def _mat_mul(a, b) -> list[list[int]]:
    """GF(2^8) matrix product (n, k) x (k, m): plain Python for small ones, vectorised with
    numpy above SMALL_MATRIX."""
    if len(a) > SMALL_MATRIX or len(b) > SMALL_MATRIX:
        return _mat_mul_np(a, b).tolist()
    out = []
    m = len(b[0]) if b else 0
    for row in a:
        acc = [0] * m
        for coef, brow in zip(row, b):
            if coef:
                acc = [x ^ y for x, y in zip(acc, _row_times(coef, brow))]
        out.append(acc)
    return out


def _mat_mul_np(a, b) -> np.ndarray:
    import numpy as np
    MUL = _mul_tables()[0]
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    return np.bitwise_xor.reduce(MUL[a[:, :, None], b[None, :, :]], axis=1)


def _mat_inv(m) -> list[list[int]]:
    """Gauss-Jordan inverse over GF(2^8): plain Python up to SMALL_MATRIX rows (a 10/3
    code's set-up then needs no numpy), above that one vectorised row operation per column
    (a 255x255 matrix, the largest a peer's d/p can make us build, takes well under a
    second)."""
    n = len(m)
    if n > SMALL_MATRIX:
        return _mat_inv_np(m)
    a = [list(row) + [int(i == j) for j in range(n)] for i, row in enumerate(m)]
    for col in range(n):
        piv = next((r for r in range(col, n) if a[r][col]), None)
        if piv is None:
            raise ValueError("matrix is singular")
        if piv != col:
            a[col], a[piv] = a[piv], a[col]
        a[col] = _row_times(gf_inv(a[col][col]), a[col])
        pivot = a[col]
        for r in range(n):
            f = a[r][col]
            if r != col and f:
                a[r] = [x ^ y for x, y in zip(a[r], _row_times(f, pivot))]
    return [row[n:] for row in a]


def _mat_inv_np(m) -> list[list[int]]:
    import numpy as np
    MUL = _mul_tables()[0]
    m = np.asarray(m, dtype=np.uint8)
    n = len(m)
    a = np.concatenate([m, np.eye(n, dtype=np.uint8)], axis=1)
    for col in range(n):
        nz = np.flatnonzero(a[col:, col])
        if not len(nz):
            raise ValueError("matrix is singular")
        piv = col + int(nz[0])
        if piv != col:
            a[[col, piv]] = a[[piv, col]]
        a[col] = MUL[gf_inv(int(a[col, col]))][a[col]]
        f = a[:, col].copy()
        f[col] = 0
        a ^= MUL[f[:, None], a[col][None, :]]
    return a[:, n:].tolist()


def encoding_matrix(d: int, p: int) -> list[list[int]]:
    """klauspost/reedsolomon's default matrix: V · inverse(top d×d of V), V[r][c] = r^c."""
    v = [[gf_pow(r, c) for c in range(d)] for r in range(d + p)]
    return _mat_mul(v, _mat_inv(v[:d]))


@functools.lru_cache(maxsize=16)
def _encoding_rows(d: int, p: int) -> tuple[tuple[int, ...], ...]:
    """encoding_matrix, built once per (d, p) in a process (0.15-0.2 s for 255/1; sessions
    and auto-tuning to a peer's shard counts share it) and immutable."""
    return tuple(map(tuple, encoding_matrix(d, p)))


def _combine(coefs: np.ndarray, shards: np.ndarray) -> np.ndarray:
    """rows of GF sums: out[i] = XOR_c coefs[i][c] * shards[c]."""
    import numpy as np
    MUL = _mul_tables()[0]
    prod = MUL[coefs[:, :, None], shards[None, :, :]]
    return np.bitwise_xor.reduce(prod, axis=1)


class ReedSolomon:
    """klauspost's code for (d, p). The byte paths (parity_bytes, reconstruct_bytes) use
    ISA-L when `accel` and libisal is installed (same matrix, so the same bytes; ~10x
    faster), else bytes.translate + numpy."""

    def __init__(self, d: int, p: int, accel: bool = True) -> None:
        if d <= 0 or p <= 0 or d + p > 256:
            raise ValueError("need 0 < dshard, 0 < pshard, dshard + pshard <= 256")
        self.d, self.p = d, p
        self.matrix = _encoding_rows(d, p)
        self.parity_coefs = self.matrix[d:]
        self._recovery_cache: dict[tuple[int, ...], list[list[int]]] = {}
        self._isal = _fec_isal.Combiner(d, p) if accel and _fec_isal.available else None

    def parity_bytes(self, shards: list[bytes], length: int) -> list[bytes]:
        """The p parity shards of d data shards; shorter shards count as zero-padded."""
        if self._isal is not None and length <= _fec_isal.MAX_LEN:
            return self._isal.combine(self._isal.tables(None, self.parity_coefs), shards, length)
        shards = [sh if len(sh) == length else sh + bytes(length - len(sh)) for sh in shards]
        return _combine_bytes(self.parity_coefs, shards, length)

    def encode(self, shards: np.ndarray) -> np.ndarray:
        """(d, L) data shards -> (p, L) parity shards (numpy arrays)."""
        import numpy as np
        return _combine(np.array(self.parity_coefs, dtype=np.uint8), shards)

    def reconstruct(self, present: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """From >= d shards {index: shard} (all the same length), the missing data shards."""
        d = self.d
        rows = sorted(present)[:d]
        import numpy as np
        sub = [self.matrix[r] for r in rows]
        inv = np.array(_mat_inv(sub), dtype=np.uint8)
        missing = [i for i in range(d) if i not in present]
        if not missing:
            return {}
        stack = np.stack([present[r] for r in rows])
        rec = _combine(inv[missing], stack)
        return {i: rec[k] for k, i in enumerate(missing)}


    def _recovery(self, rows: tuple[int, ...], missing: tuple[int, ...]) -> list[list[int]]:
        """Coefficients over the shards of `rows` (the first d present, sorted) that give
        each missing data shard: the `missing` rows of inverse(matrix[rows]), cached (loss
        patterns repeat, like klauspost's inversion tree). The data rows of a systematic
        matrix are identity rows, so only the k x k system of the parity rows in use is
        inverted (k = len(missing) <= p): a 255/1 group costs microseconds instead of a
        255 x 255 inversion (~0.1-0.2 s), whatever pattern a peer makes us recover."""
        coefs = self._recovery_cache.get(rows)
        if coefs is None:
            if len(self._recovery_cache) >= 256:
                self._recovery_cache.clear()
            d, m = self.d, self.matrix
            par = [r for r in rows if r >= d]     # k parity rows
            have = [r for r in rows if r < d]     # d - k present data shards
            pinv = _mat_inv([[m[r][c] for c in missing] for r in par])
            # missing = pinv . (parity + P[par][have] . present data): one row per missing
            via_data = (_mat_mul(pinv, [[m[r][c] for c in have] for r in par])
                        if have else [[] for _ in missing])
            coefs = []
            for a in range(len(missing)):
                row, pa, da = [], iter(pinv[a]), iter(via_data[a])
                for r in rows:
                    row.append(next(pa) if r >= d else next(da))
                coefs.append(row)
            self._recovery_cache[rows] = coefs
        return coefs

    def reconstruct_bytes(self, present: dict[int, bytes], length: int) -> dict[int, bytes]:
        """The same as reconstruct() on bytes shards (the hot path); shards shorter than
        `length` count as zero-padded."""
        d = self.d
        rows = tuple(sorted(present)[:d])
        missing = tuple(i for i in range(d) if i not in present)
        if not missing:
            return {}
        coefs = self._recovery(rows, missing)
        shards = [present[r] for r in rows]
        if self._isal is not None and length <= _fec_isal.MAX_LEN:
            tables = self._isal.tables((rows, missing), coefs)
            rec = self._isal.combine(tables, shards, length)
        else:
            shards = [sh if len(sh) == length else sh + bytes(length - len(sh)) for sh in shards]
            rec = _combine_bytes(coefs, shards, length)
        return dict(zip(missing, rec))


class FecEncoder:
    def __init__(self, d: int, p: int, accel: bool = True) -> None:
        self.rs = ReedSolomon(d, p, accel)
        self.d, self.p = d, p
        self.shard_size = d + p
        self.paws = (0xFFFFFFFF // self.shard_size) * self.shard_size
        self.next = 0
        self._shards: list[bytes] = []
        self._max = 0
        self._last_ms = 0
        self.parity_skipped = 0

    def _seq(self) -> int:
        s = self.next
        self.next = (s + 1) % self.paws
        return s

    def encode(self, kcp: bytes, now_ms: int) -> list[bytes]:
        """The FEC data packet for `kcp`, then the group's parity packets if it completes."""
        n = len(kcp) + 2
        pkt = _HDR.pack(self._seq(), TYPE_DATA, n) + kcp
        self._shards.append(pkt[6:])
        if n > self._max:
            self._max = n
        out = [pkt]
        if len(self._shards) == self.d:
            if ((now_ms - self._last_ms) & 0xFFFFFFFF) < MAX_ENCODE_LATENCY_MS:
                parity = self.rs.parity_bytes(self._shards, self._max)
                for i in range(self.p):
                    out.append(_SEQ_FLAG.pack(self._seq(), TYPE_PARITY) + parity[i])
            else:
                self.parity_skipped += 1
                self.next = (self.next + self.p) % self.paws
            self._shards = []
            self._max = 0
        self._last_ms = now_ms
        return out


AUTOTUNE_SAMPLES = 258


def find_period(samples, want_data: bool) -> int:
    """kcp-go's auto-tune period detector (framing §3.5) over (is_data, seqid) samples: sort
    by seqid (wrap-aware), walk from the lowest to the first edge into `want_data`, then to
    the first edge out of it; the distance is the period. A seqid step other than +1 met on
    the way fails (-1), as does a missing edge."""
    return _period(_tune_order(samples), want_data)


def _tune_order(samples) -> list[int]:
    """The samples as sorted ints: position << 1 | is_data, where a seqid's position is its
    distance from the newest sample's plus 2**31 (so +1 steps stay +1 steps). One sort of
    plain ints serves both periods; samples with equal seqids may come in either order (a
    walk that reaches them fails on the step, whatever their types)."""
    if len(samples) < 3:
        return []
    base = samples[-1][1] - 0x80000000
    return sorted([((q - base) & 0xFFFFFFFF) << 1 | b for b, q in samples])


def _period(srt: list[int], want_data: bool) -> int:
    if len(srt) < 3:
        return -1
    want = int(want_data)
    left = _next_edge(srt, 0, want)           # the first edge into `want`
    if left < 0:
        return -1
    right = _next_edge(srt, left, 1 - want)   # then the first edge out of it
    return right - left if right >= 0 else -1


def _next_edge(srt: list[int], start: int, bit: int) -> int:
    """Walking +1 seqid steps from srt[start]: the index of the first sample whose kind
    becomes `bit` (the one before it has the other kind); -1 at a gap or the end."""
    last = srt[start]
    for idx in range(start + 1, len(srt)):
        cur = srt[idx]
        if (last >> 1) + 1 != cur >> 1:
            return -1
        if (cur & 1) == bit and (last & 1) != bit:
            return idx
        last = cur
    return -1


class FecDecoder:
    """Collects shards per group and recovers lost data shards, as kcp-go v5.6.72 does.

    A packet whose type disagrees with its position (the peer uses another dshard/pshard)
    starts auto-tuning: from then on packets are only sampled, never stored, until the
    period of data and parity runs is found in the last 258 (type, seqid) samples; a new
    (d, p) is then adopted (pending groups dropped). Data packets reach KCP regardless: the
    caller feeds every one directly. Memory is bounded: at most KEEP_GROUPS + 1 groups of at
    most d + p shards, and 258 samples."""

    KEEP_GROUPS = 3

    def __init__(self, d: int, p: int, accel: bool = True) -> None:
        self.accel = accel
        self.recovered = 0
        self.unrecoverable = 0
        self.mismatched = 0
        self.retuned = 0
        self.samples: deque[tuple[bool, int]] = deque(maxlen=AUTOTUNE_SAMPLES)
        self.should_tune = False
        self._setup(d, p)

    def _setup(self, d: int, p: int) -> None:
        self.rs = ReedSolomon(d, p, self.accel)
        self.d, self.p = d, p
        self.shard_size = d + p
        self.paws = (0xFFFFFFFF // self.shard_size) * self.shard_size
        self.ngroups = self.paws // self.shard_size
        self.groups: dict[int, dict[int, bytes]] = {}
        self.done: set[int] = set()  # groups that reached d shards (stragglers are no loss)
        self.newest: int | None = None

    def _gdiff(self, a: int, b: int) -> int:
        h = self.ngroups // 2
        return ((a - b + h) % self.ngroups) - h

    def _tune(self) -> None:
        srt = _tune_order(self.samples)
        ds = _period(srt, True)
        ps = _period(srt, False)
        if ds > 0 and ps > 0 and ds + ps <= 256:
            self.should_tune = False
            if (ds, ps) != (self.d, self.p):
                self._setup(ds, ps)
                self.retuned += 1

    def decode(self, pkt) -> list[bytes]:
        """Feed one FEC packet (data or parity); returns recovered KCP payloads."""
        if len(pkt) < 6:
            return []
        seqid, flag = _SEQ_FLAG.unpack_from(pkt, 0)
        is_data = flag == TYPE_DATA
        self.samples.append((is_data, seqid))
        if seqid >= self.paws:
            return []
        idx = seqid % self.shard_size
        if (idx < self.d) != is_data:
            self.mismatched += 1
            self.should_tune = True
        if self.should_tune:
            self._tune()
            return []
        gid = seqid // self.shard_size
        if self.newest is None or self._gdiff(gid, self.newest) > 0:
            self.newest = gid
            stale = [g for g in self.groups if self._gdiff(self.newest, g) > self.KEEP_GROUPS]
            for g in stale:
                if g not in self.done:
                    self.unrecoverable += 1
                del self.groups[g]
                self.done.discard(g)
        elif self._gdiff(self.newest, gid) > self.KEEP_GROUPS:
            return []
        group = self.groups.setdefault(gid, {})
        if idx in group:
            return []
        group[idx] = bytes(pkt[6:])
        if len(group) < self.d:
            return []
        shards = dict(group)
        group.clear()
        self.done.add(gid)
        if all(i in shards for i in range(self.d)):
            return []
        L = max(len(s) for s in shards.values())
        try:
            rec = self.rs.reconstruct_bytes(shards, L)
        except ValueError:
            self.unrecoverable += 1
            return []
        out = []
        for i in sorted(rec):
            r = rec[i]
            sz = r[0] | (r[1] << 8) if len(r) >= 2 else 0  # shards may be 0 or 1 byte long
            if 2 <= sz <= len(r):
                out.append(r[2:sz])
                self.recovered += 1
        return out
