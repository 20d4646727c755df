"""Only for the optional C extension (everything else is in pyproject.toml): paqet.wire._cfb,
one C call per datagram for Nettle's CFB (see its source). `optional=True`: without a C
compiler or Python headers the install goes on and paqet uses its ctypes path."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("paqet.wire._cfb", ["src/paqet/wire/_cfb.c"], optional=True,
                             extra_compile_args=["-O2"])])
