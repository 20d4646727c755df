"""paqet's key derivation and kcp-go's BlockCrypt ciphers, byte-compatible with kcp-go v5.

Every non-AEAD cipher transforms the WHOLE datagram (nonce included) in full-block CFB with
kcp-go's fixed IV, using only the block cipher's encrypt direction (kcp-go-framing.md §4).
Encryption is chained and done by the library's CFB mode; decryption is computed as one ECB
pass over the ciphertext shifted by a block, then one XOR — several times cheaper in Python.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import threading
import types
from concurrent.futures import Future


from . import _crypto_nettle

# `cryptography` is imported when a cipher needs it (not for Nettle's ciphers): its Rust
# binding alone takes ~50 ms to import, a tenth of a process's start-up.
_create_enc = None  # set by _lib(): the binding Cipher() wraps


@functools.cache
def _lib() -> types.SimpleNamespace:
    """The parts of `cryptography` the ciphers use (Cipher, algorithms, modes, the decrepit
    dalg / dmodes, AESGCM, ChaCha20Poly1305), imported on first use."""
    global _create_enc
    from cryptography.hazmat.decrepit.ciphers import algorithms as dalg
    from cryptography.hazmat.decrepit.ciphers import modes as dmodes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    try:  # the binding Cipher() wraps: skipping its per-call checks halves the cost per datagram
        from cryptography.hazmat.bindings._rust import openssl as _rust_openssl
        _create_enc = _rust_openssl.ciphers.create_encryption_ctx
    except (ImportError, AttributeError):  # pragma: no cover - other cryptography versions
        _create_enc = None
    return types.SimpleNamespace(Cipher=Cipher, algorithms=algorithms, modes=modes, dalg=dalg,
                                 dmodes=dmodes, AESGCM=AESGCM,
                                 ChaCha20Poly1305=ChaCha20Poly1305)

INITIAL_VECTOR = bytes.fromhex("a7734f9c12ac1b01a415f2c1fc78e66b")
SALT = b"paqet"
ITERATIONS = 100_000
XOR_SALT = b"sH3CIVoF#rWLtJo6"

#: Bytes of the derived key each block uses (0 = all 32).
KEY_SIZES = {
    "aes": 32, "aes-128": 16, "aes-128-gcm": 16, "aes-192": 24, "salsa20": 32, "blowfish": 32,
    "twofish": 32, "cast5": 16, "3des": 24, "tea": 16, "xtea": 16, "xor": 32, "sm4": 16,
    "none": 32, "null": 32, "chacha20": 32,
}
BLOCKS = tuple(KEY_SIZES)
_np_xor = None  # (bitwise_xor, frombuffer, uint8) once numpy is first needed
UPSTREAM_BLOCKS = tuple(b for b in BLOCKS if b != "chacha20")


class CryptoError(ValueError):
    """A datagram that does not decrypt (bad length, CRC or tag)."""


def _pbkdf2(text: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", text.encode("utf-8"), SALT, ITERATIONS, 32)


_soon: dict[str, Future] = {}  # derivations started by derive_key_soon, not yet taken
_soon_lock = threading.Lock()


def derive_key_soon(text: str) -> None:
    """Start derive_key(text) in a thread. PBKDF2 with 100,000 rounds takes ~40 ms and
    hashlib releases the GIL while it runs, so a process's start-up (imports, netlink,
    nftables) goes on meanwhile; derive_key() then takes the result instead of starting
    over."""
    with _soon_lock:
        if text in _soon:
            return
        fut = _soon[text] = Future()

    def work() -> None:
        try:
            fut.set_result(_pbkdf2(text))
        except BaseException as exc:  # handed to derive_key's caller
            fut.set_exception(exc)
    threading.Thread(target=work, name="paqet-kdf", daemon=True).start()


@functools.lru_cache(maxsize=64)
def derive_key(text: str) -> bytes:
    """paqet's kcp_block.go: PBKDF2-HMAC-SHA256(UTF-8 key, "paqet", 100000, 32)."""
    with _soon_lock:
        fut = _soon.pop(text, None)
    if fut is not None:
        return fut.result()
    return _pbkdf2(text)


def block_key(block: str, derived: bytes) -> bytes:
    return derived[:KEY_SIZES[block]]


def _xor(a: bytes, b: bytes) -> bytes:
    """a XOR b[:len(a)]. numpy for datagram-sized inputs (2.5 us for 1350 bytes against
    3.8 us through big integers); big integers for small ones, where numpy's call overhead
    dominates."""
    global _np_xor
    n = len(a)
    if n >= 256:
        if _np_xor is None:  # imported on first use: most processes never get here (Nettle)
            import numpy
            _np_xor = (numpy.bitwise_xor, numpy.frombuffer, numpy.uint8)
        xor, frombuffer, u8 = _np_xor
        return xor(frombuffer(a, u8), frombuffer(b, u8, n)).tobytes()
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[:n], "little")).to_bytes(n, "little")


class _CFB:
    """Full-block CFB with kcp-go's fixed IV over a cryptography block algorithm."""

    header = 20  # nonce 16 + crc 4
    tag = 0

    def __init__(self, algorithm) -> None:
        lib = _lib()
        self._cipher = lib.Cipher
        self.alg = algorithm
        self.bs = algorithm.block_size // 8
        self.iv = INITIAL_VECTOR[:self.bs]
        self._ecb = lib.Cipher(algorithm, lib.modes.ECB()).encryptor()
        self._mode = lib.dmodes.CFB(self.iv)  # the IV never changes: one mode object serves all
        if _create_enc is not None:
            try:
                _create_enc(algorithm, self._mode).update(b"")
                self.encrypt = self._encrypt_fast
            except Exception:  # pragma: no cover
                pass

    def encrypt(self, data: bytes) -> bytes:
        return self._cipher(self.alg, self._mode).encryptor().update(data)

    def _encrypt_fast(self, data: bytes) -> bytes:
        return _create_enc(self.alg, self._mode).update(data)

    def decrypt(self, data: bytes) -> bytes:
        bs = self.bs
        n = len(data)
        full = n - n % bs
        # keystream block i = E(C[i-1]) with C[-1] = IV; one ECB call covers them all.
        src = self.iv + data[:full - bs] if full else self.iv
        if n % bs:
            src = self.iv + data[:full] if full else self.iv
        ks = self._ecb.update(src)
        return _xor(data, ks)


class _BlockFnCFB(_CFB):
    """CFB over a block function the libraries only give one block at a time."""

    def __init__(self, encrypt_block, bs: int, ecb_many=None) -> None:
        self.enc = encrypt_block
        self.bs = bs
        self.iv = INITIAL_VECTOR[:bs]
        self.ecb_many = ecb_many  # bytes of whole blocks -> their encryptions, vectorised

    def encrypt(self, data: bytes) -> bytes:
        bs, enc = self.bs, self.enc
        out = bytearray(len(data))
        prev = self.iv
        for i in range(0, len(data), bs):
            chunk = data[i:i + bs]
            c = _xor(chunk, enc(prev))
            out[i:i + len(c)] = c
            prev = c
        return bytes(out)

    def decrypt(self, data: bytes) -> bytes:
        bs, enc = self.bs, self.enc
        if self.ecb_many is not None:
            # keystream block i = E(C[i-1]): independent blocks, so all at once
            n = len(data)
            nblk = -(-n // bs)
            src = self.iv + data[:(nblk - 1) * bs]
            return _xor(data, self.ecb_many(src))
        prev = self.iv
        ks = []
        for i in range(0, len(data), bs):
            ks.append(enc(prev))
            prev = data[i:i + bs]
        return _xor(data, b"".join(ks))


def _tea_like(key: bytes, rounds_cycles: int, xtea: bool):
    k = struct.unpack(">4I", key)
    delta, mask = 0x9E3779B9, 0xFFFFFFFF
    pack, unpack = struct.Struct(">2I").pack, struct.Struct(">2I").unpack

    if xtea:
        def enc(block: bytes) -> bytes:
            v0, v1 = unpack(block)
            s = 0
            for _ in range(rounds_cycles):
                v0 = (v0 + ((((v1 << 4) ^ (v1 >> 5)) + v1) ^ (s + k[s & 3]))) & mask
                s = (s + delta) & mask
                v1 = (v1 + ((((v0 << 4) ^ (v0 >> 5)) + v0) ^ (s + k[(s >> 11) & 3]))) & mask
            return pack(v0, v1)
    else:
        k0, k1, k2, k3 = k

        def enc(block: bytes) -> bytes:
            v0, v1 = unpack(block)
            s = 0
            for _ in range(rounds_cycles):
                s = (s + delta) & mask
                v0 = (v0 + ((((v1 << 4) + k0) ^ (v1 + s) ^ ((v1 >> 5) + k1)))) & mask
                v1 = (v1 + ((((v0 << 4) + k2) ^ (v0 + s) ^ ((v0 >> 5) + k3)))) & mask
            return pack(v0, v1)
    return enc


def _tea_like_many(key: bytes, cycles: int, xtea: bool):
    """The same block function over many 8-byte blocks at once with numpy uint32 lanes
    (wrap-around arithmetic is numpy's): used for CFB decryption, where blocks are
    independent."""
    import numpy as np
    k = [np.uint32(x) for x in struct.unpack(">4I", key)]
    delta = 0x9E3779B9
    be = np.dtype(">u4")

    def many(src: bytes) -> bytes:
        w = np.frombuffer(src, be).astype(np.uint32)
        v0, v1 = w[0::2].copy(), w[1::2].copy()
        s = 0
        with np.errstate(over="ignore"):
            for _ in range(cycles):
                if xtea:
                    v0 += (((v1 << 4) ^ (v1 >> 5)) + v1) ^ np.uint32((s + int(k[s & 3])) & 0xFFFFFFFF)
                    s = (s + delta) & 0xFFFFFFFF
                    v1 += (((v0 << 4) ^ (v0 >> 5)) + v0) ^ np.uint32((s + int(k[(s >> 11) & 3])) & 0xFFFFFFFF)
                else:
                    s = (s + delta) & 0xFFFFFFFF
                    su = np.uint32(s)
                    v0 += ((v1 << 4) + k[0]) ^ (v1 + su) ^ ((v1 >> 5) + k[1])
                    v1 += ((v0 << 4) + k[2]) ^ (v0 + su) ^ ((v0 >> 5) + k[3])
        out = np.empty(2 * len(v0), be)
        out[0::2], out[1::2] = v0, v1
        return out.tobytes()
    return many


class _Salsa20:
    header = 20
    tag = 0

    def __init__(self, key: bytes) -> None:
        from Crypto.Cipher import Salsa20
        self._new = Salsa20.new
        self.key = key

    def encrypt(self, data: bytes) -> bytes:
        if len(data) < 8:
            return data
        return data[:8] + self._new(key=self.key, nonce=data[:8]).encrypt(data[8:])

    decrypt = encrypt


class _Xor:
    header = 20
    tag = 0

    def __init__(self, key: bytes) -> None:
        self.pad = hashlib.pbkdf2_hmac("sha1", key, XOR_SALT, 32, 1500)

    def encrypt(self, data: bytes) -> bytes:
        n = min(len(data), 1500)
        return _xor(data[:n], self.pad) + data[n:]

    decrypt = encrypt


class _NoneCrypt:
    header = 20
    tag = 0

    def encrypt(self, data: bytes) -> bytes:
        return data

    decrypt = encrypt


class _Aead:
    """aes-128-gcm as kcp-go frames it: nonce(12) || ciphertext || tag(16), no CRC.
    chacha20 (Python-to-Python only) uses the same layout with ChaCha20-Poly1305."""

    header = 12
    tag = 16

    def __init__(self, aead) -> None:
        self.aead = aead


def make_block(name: str, derived: bytes, accel: bool = True):
    """The BlockCrypt for a paqet `block` name, keyed with the derived key (or None for
    "null", which has no crypto layer). With `accel` (default), the CFB ciphers Nettle has
    (aes*, twofish, blowfish, cast5, 3des) run through libnettle when it is installed:
    same bytes, one foreign call per datagram. The object keeps per-call buffers: one per
    codec, not shared between threads."""
    if name not in KEY_SIZES:
        raise ValueError(f"unsupported block type: {name}")
    key = block_key(name, derived)
    if accel:
        fast = _crypto_nettle.cfb(name, key, INITIAL_VECTOR)
        if fast is not None:
            return fast
    if name in ("aes", "aes-128", "aes-192"):
        return _CFB(_lib().algorithms.AES(key))
    if name == "sm4":
        return _CFB(_lib().algorithms.SM4(key))
    if name == "blowfish":
        return _CFB(_lib().dalg.Blowfish(key))
    if name == "cast5":
        return _CFB(_lib().dalg.CAST5(key))
    if name == "3des":
        return _CFB(_lib().dalg.TripleDES(key))
    if name == "twofish":
        import twofish
        return _BlockFnCFB(twofish.Twofish(key).encrypt, 16)
    if name == "tea":
        return _BlockFnCFB(_tea_like(key, 8, xtea=False), 8, _tea_like_many(key, 8, False))
    if name == "xtea":
        return _BlockFnCFB(_tea_like(key, 32, xtea=True), 8, _tea_like_many(key, 32, True))
    if name == "salsa20":
        return _Salsa20(key)
    if name == "xor":
        return _Xor(key)
    if name == "none":
        return _NoneCrypt()
    if name == "aes-128-gcm":
        return _Aead(_lib().AESGCM(key))
    if name == "chacha20":
        return _Aead(_lib().ChaCha20Poly1305(key))
    return None  # null
