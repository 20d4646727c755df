"""CFB decryption shortcuts (one ECB/vectorised pass over the shifted ciphertext) agree with
the plain block-by-block CFB definition for every length."""

import pytest
from hypothesis import given, settings, strategies as st

from paqet.wire.crypto import derive_key, make_block

KEY = derive_key("cfb-key")


@pytest.mark.parametrize("name", ["tea", "xtea"])
@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_vectorised_tea_decrypt_matches_per_block(name, data):
    blk = make_block(name, KEY)
    ct = blk.encrypt(data)
    fast = blk.decrypt(ct)
    many, blk.ecb_many = blk.ecb_many, None
    try:
        slow = blk.decrypt(ct)
    finally:
        blk.ecb_many = many
    assert fast == slow == data


@pytest.mark.parametrize("name", ["aes", "aes-128", "aes-192", "sm4", "blowfish", "cast5", "3des"])
@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_ecb_shift_decrypt_inverts_library_cfb(name, data):
    blk = make_block(name, KEY)
    assert blk.decrypt(blk.encrypt(data)) == data
