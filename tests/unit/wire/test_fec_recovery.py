"""Recovery coefficients from the k x k parity system equal the rows of the full inverse of
the present rows' sub-matrix, for any code size and loss pattern, and recover the data."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paqet.wire.fec import ReedSolomon, _mat_inv


def _check(rs: ReedSolomon, keep: list[int], rnd: random.Random) -> None:
    d = rs.d
    rows = tuple(sorted(keep)[:d])
    missing = tuple(i for i in range(d) if i not in keep)
    if not missing:
        return
    full_inv = _mat_inv([rs.matrix[r] for r in rows])
    assert rs._recovery(rows, missing) == [full_inv[i] for i in missing]
    shards = [rnd.randbytes(rnd.randint(1, 64)) for _ in range(d)]
    L = max(map(len, shards))
    full = [sh + bytes(L - len(sh)) for sh in shards] + rs.parity_bytes(shards, L)
    assert rs.reconstruct_bytes({i: full[i] for i in keep}, L) == {i: full[i] for i in missing}


@settings(max_examples=80, deadline=None)
@given(d=st.integers(1, 30), p=st.integers(1, 10), seed=st.integers(0, 2**32 - 1),
       accel=st.booleans())
def test_recovery_rows_are_the_full_inverse_rows(d, p, seed, accel):
    rnd = random.Random(seed)
    rs = ReedSolomon(d, p, accel)
    _check(rs, rnd.sample(range(d + p), rnd.randint(d, d + p)), rnd)


@pytest.mark.parametrize("d,p", [(255, 1), (128, 128), (1, 255), (200, 56)])
def test_large_codes(d, p):
    rnd = random.Random(d * 1000 + p)
    rs = ReedSolomon(d, p)
    for _ in range(2):
        _check(rs, rnd.sample(range(d + p), d), rnd)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 32), m=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_small_matrices_in_python_equal_numpy(n, m, seed):
    """Set-up of codes up to SMALL_MATRIX rows runs in plain Python (no numpy import); it
    must give the vectorised path's matrices exactly."""
    from paqet.wire.fec import _mat_inv_np, _mat_mul, _mat_mul_np, gf_pow

    rnd = random.Random(seed)
    rows = rnd.sample(range(256), n)
    v = [[gf_pow(r, c) for c in range(n)] for r in rows]  # Vandermonde: invertible
    assert _mat_inv(v) == _mat_inv_np(v)
    b = [[rnd.randrange(256) for _ in range(m)] for _ in range(n)]
    assert _mat_mul(v, b) == _mat_mul_np(v, b).tolist()


def test_fec_with_isal_never_imports_numpy():
    """numpy costs ~12 MB of RSS: a FEC session on ISA-L builds its code and recovers
    losses without it."""
    import subprocess
    import sys

    from paqet.wire import _fec_isal
    if not _fec_isal.available:
        pytest.skip("libisal is not installed: the fallback combiner uses numpy")
    code = (
        "import sys\n"
        "from paqet.wire.datagram import DatagramCodec\n"
        "tx = DatagramCodec('aes', 'k', dshard=10, pshard=3)\n"
        "rx = DatagramCodec('aes', 'k', dshard=10, pshard=3)\n"
        "wires = [w for i in range(30) for w in tx.encode(bytes([i]) * 100, i)]\n"
        "got = [k for w in wires[1:] for k, _ in rx.decode(w)]\n"
        "print(len(got), 'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["30", "False"]  # the lost first packet recovered, numpy never loaded
