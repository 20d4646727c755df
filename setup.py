"""Only for the optional C extensions (everything else is in pyproject.toml): paqet.wire._cfb,
one C call per datagram for Nettle's CFB, and paqet.net._ring, the AF_PACKET receive ring
drained in one call (see their sources). `optional=True`: without a C compiler or Python
headers the install goes on and paqet uses its Python (and ctypes) paths."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("paqet.wire._cfb", ["src/paqet/wire/_cfb.c"], optional=True,
              extra_compile_args=["-O2"]),
    Extension("paqet.net._ring", ["src/paqet/net/_ring.c"], optional=True,
              extra_compile_args=["-O2"]),
])
