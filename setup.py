"""Build the compiled core (one extension, several C files sharing headers).

``XBZRLE_CORE_OPT`` replaces ``-O3`` and ``XBZRLE_CORE_CFLAGS`` /
``XBZRLE_CORE_LDFLAGS`` come last, so a sanitizer build (scripts/asan-test)
gets exactly the flags it asks for.
"""

import os
import shlex
from pathlib import Path

from setuptools import Extension, setup

CORE = Path("src/xbzrle/_core")

setup(
    ext_modules=[
        Extension(
            "xbzrle._core",
            sources=sorted(str(p) for p in CORE.glob("*.c")),
            depends=sorted(str(p) for p in CORE.glob("*.h")),
            include_dirs=[str(CORE)],
            extra_compile_args=[os.environ.get("XBZRLE_CORE_OPT", "-O3"), "-std=gnu11", "-Wall",
                                "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing",
                                "-pthread", *shlex.split(os.environ.get("XBZRLE_CORE_CFLAGS", ""))],
            extra_link_args=["-pthread",
                             *shlex.split(os.environ.get("XBZRLE_CORE_LDFLAGS", ""))],
        )
    ],
)
