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
