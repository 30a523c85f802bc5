"""Build the compiled core (one extension, several C files sharing headers)."""

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
            extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-fno-strict-aliasing", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ],
)
