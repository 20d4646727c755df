"""Full-block CFB through GNU Nettle (Debian `libnettle8`, loaded with ctypes).

Nettle's `cfb_encrypt`/`cfb_decrypt` take the key schedule, the block function and an IV
buffer, and do a whole datagram in ONE foreign call: no per-datagram cipher context as with
OpenSSL's EVP, and Nettle has the block functions the `cryptography` package lacks or runs
slowly here (Twofish). Standard CFB (partial last block XORed with E(previous ciphertext)),
i.e. kcp-go's: the bytes are checked against the Go vectors.

The per-datagram call goes through `paqet.wire._cfb` when that C extension was built (it
calls the same Nettle functions through the addresses ctypes resolved: a ctypes call costs
tens of us on a cold cache, docs/decisions.md), else through ctypes;
PAQET_NO_CFB_EXT=1 forces ctypes.

Optional: `cfb(name, key)` returns None when the library or a cipher is unavailable, or when
Nettle rejects the key (it refuses weak DES/Blowfish keys, which Go accepts), and crypto.py
keeps its own path. Not thread-safe: one object per codec (per session), as used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["cfb", "available", "extension"]


def _load():
    if os.environ.get("PAQET_NO_NETTLE"):
        return None
    for name in ("libnettle.so.8", ctypes.util.find_library("nettle")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            # no argtypes on the per-datagram calls: every argument is passed as a ready
            # ctypes object (or bytes), which skips argtypes' conversions (~0.7 us a call)
            for fn in (lib.nettle_cfb_encrypt, lib.nettle_cfb_decrypt):
                fn.restype = None
            return lib
        except (OSError, AttributeError):
            continue
    return None


try:
    from . import _cfb as _EXT
except ImportError:  # not built (no compiler when installed): the ctypes path
    _EXT = None
if os.environ.get("PAQET_NO_CFB_EXT"):
    _EXT = None

_LIB = _load()
available = _LIB is not None
extension = available and _EXT is not None
_ENC = _LIB.nettle_cfb_encrypt if available else None
_DEC = _LIB.nettle_cfb_decrypt if available else None
_size_t = ctypes.c_size_t

_CTX_BYTES = 8192  # larger than any of these ciphers' context structs (twofish: 4256)
_MAX = 65536 + 64  # largest datagram handled in the reusable output buffer

# name -> (block size, set-key symbol, set-key takes a length, encrypt symbol)
_CIPHERS = {
    "aes-128": (16, "nettle_aes128_set_encrypt_key", False, "nettle_aes128_encrypt"),
    "aes-192": (16, "nettle_aes192_set_encrypt_key", False, "nettle_aes192_encrypt"),
    "aes": (16, "nettle_aes256_set_encrypt_key", False, "nettle_aes256_encrypt"),
    "twofish": (16, "nettle_twofish_set_key", True, "nettle_twofish_encrypt"),
    "blowfish": (8, "nettle_blowfish_set_key", True, "nettle_blowfish_encrypt"),
    "cast5": (8, "nettle_cast5_set_key", True, "nettle_cast128_encrypt"),
    "3des": (8, "nettle_des3_set_key", False, "nettle_des3_encrypt"),
}
# set-key functions that return int (0 = weak key rejected); the others return void
_CHECKED = {"nettle_blowfish_set_key", "nettle_des3_set_key"}


class NettleCFB:
    header = 20  # nonce 16 + crc 4
    tag = 0

    def __init__(self, bs: int, ctx, fn_addr: int, iv: bytes) -> None:
        self.bs = bs
        self._keep = ctx  # the key schedule; _args points into it
        self._iv0 = iv
        self._iv = ctypes.create_string_buffer(bs)
        self._ivv = memoryview(self._iv).cast("B")
        self._out = ctypes.create_string_buffer(_MAX)
        self._outv = memoryview(self._out).cast("B")
        self._args = (ctypes.c_void_p(ctypes.addressof(ctx)), ctypes.c_void_p(fn_addr),
                      ctypes.c_size_t(bs), ctypes.c_void_p(ctypes.addressof(self._iv)))
        self._dst = ctypes.c_void_p(ctypes.addressof(self._out))

    def _run(self, fn, data) -> bytes:
        n = len(data)
        self._ivv[:] = self._iv0
        if type(data) is not bytes:
            data = bytes(data)
        if n > _MAX:  # larger than any datagram: a one-off buffer, never an error
            out = ctypes.create_string_buffer(n)
            fn(*self._args, _size_t(n), out, data)
            return out.raw
        fn(*self._args, _size_t(n), self._dst, data)
        return bytes(self._outv[:n])

    def encrypt(self, data) -> bytes:
        return self._run(_ENC, data)

    def decrypt(self, data) -> bytes:
        return self._run(_DEC, data)


class ExtCFB:
    """The same CFB through the C extension: encrypt/decrypt are the extension object's own
    methods (one C call each)."""

    __slots__ = ("bs", "encrypt", "decrypt", "_c")
    header = 20
    tag = 0

    def __init__(self, bs: int, ctx, fn_addr: int, iv: bytes) -> None:
        addr = ctypes.cast
        self.bs = bs
        self._c = _EXT.Cfb(addr(_ENC, ctypes.c_void_p).value, addr(_DEC, ctypes.c_void_p).value,
                           ctypes.addressof(ctx), fn_addr, bs, iv, ctx)
        self.encrypt = self._c.encrypt
        self.decrypt = self._c.decrypt


def cfb(name: str, key: bytes, iv: bytes, ext: bool | None = None):
    """A kcp-go CFB BlockCrypt for `name` over Nettle, or None (see module doc). `ext`:
    through the C extension (None: when it is built), or through ctypes (False)."""
    spec = _CIPHERS.get(name)
    if _LIB is None or spec is None or (ext and _EXT is None):
        return None
    bs, set_key, with_len, encrypt = spec
    try:
        setk = getattr(_LIB, set_key)
        fn = getattr(_LIB, encrypt)
    except AttributeError:
        return None
    ctx = ctypes.create_string_buffer(_CTX_BYTES)
    setk.restype = ctypes.c_int if set_key in _CHECKED else None
    if with_len:
        setk.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        ok = setk(ctx, len(key), key)
    else:
        setk.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        ok = setk(ctx, key)
    if set_key in _CHECKED and not ok:
        return None
    kind = ExtCFB if _EXT is not None and ext is not False else NettleCFB
    return kind(bs, ctx, ctypes.cast(fn, ctypes.c_void_p).value, iv[:bs])
