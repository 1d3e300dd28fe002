"""cffi out-of-line API-mode builder for pylaf's C core.

The cdef is the region of csrc/laf.h between the CFFI markers: the public
header is the single source of every type, constant and prototype.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "laf.h"
SOURCES_MK = CSRC / "sources.mk"


def core_sources(path: Path = SOURCES_MK) -> list[str]:
    """The C core's source files: the LAF_CORE_SOURCES line of csrc/sources.mk."""
    m = re.search(r"^LAF_CORE_SOURCES\s*:?=\s*(.+)$", path.read_text(), re.M)
    if not m:
        raise RuntimeError(f"{path}: no LAF_CORE_SOURCES line")
    return m.group(1).split()


SOURCES = core_sources()

_REGION = re.compile(r"/\* --- BEGIN CFFI CDEF --- \*/(.*?)/\* --- END CFFI CDEF --- \*/", re.S)


def cdef_from_header(path: Path = HEADER) -> str:
    """Return the cffi-parseable region of the public header."""
    m = _REGION.search(path.read_text())
    if not m:
        raise RuntimeError(f"{path}: CFFI CDEF markers not found")
    # cffi's parser does not take comments with '#' directives inside; strip comments
    text = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def extra_compile_args() -> list[str]:
    args = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
            "-fno-strict-aliasing"]
    if os.environ.get("PYLAF_DEBUG"):
        args += ["-O1", "-g", "-DLAF_DEBUG"]
    if os.environ.get("PYLAF_SANITIZE"):
        args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    return args


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header())
ffibuilder.set_source(
    "pylaf._laf",
    '#include "laf.h"',
    sources=[str((CSRC / s).relative_to(ROOT)) for s in SOURCES],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    extra_compile_args=extra_compile_args(),
    extra_link_args=["-fsanitize=address,undefined"] if os.environ.get("PYLAF_SANITIZE") else [],
)

if __name__ == "__main__":
    os.chdir(ROOT)
    ffibuilder.compile(verbose=False)
