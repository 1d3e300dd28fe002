"""Sizes in the kernel's spelling: ``64K``, ``2M``, ``hugepages-64kB``."""
from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
          "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}
#: ASCII digits and units only (str.isdigit() and re's \d also take other scripts' digits)
_SIZE = re.compile(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", re.ASCII)


def parse_size(text: str | int) -> int:
    """Parse ``4096``, ``64K``, ``64kB``, ``2M``, ``1G`` into bytes (memparse style)."""
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text!r}: negative")
        return text
    m = _SIZE.fullmatch(str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"invalid size {text!r}: expected a number with K, M, G or T")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def format_size(nbytes: int) -> str:
    """Format bytes the way thp_anon= and the per-size dirs name them: 16K, 2M, 1G."""
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= mult and nbytes % mult == 0:
            return f"{nbytes // mult}{unit}"
    return f"{nbytes}B" if nbytes < 1024 else f"{nbytes}"


def order_of(size: str | int, page_size: int) -> int:
    """Folio order of a size: ``order_of("64K", 4096) == 4``; rejects non powers of two."""
    nbytes = parse_size(size)
    if nbytes < page_size or nbytes % page_size or (nbytes // page_size) & (nbytes // page_size - 1):
        raise ValueError(
            f"invalid folio size {size!r}: not a power-of-two multiple of the {format_size(page_size)} page"
        )
    return (nbytes // page_size).bit_length() - 1


def size_of(order: int, page_size: int) -> str:
    """``size_of(4, 4096) == "64K"``."""
    return format_size(page_size << order)


def sysfs_dirname(order: int, page_size: int) -> str:
    """``hugepages-64kB`` for order 4 with 4K pages."""
    return f"hugepages-{(page_size << order) // 1024}kB"
