"""App Center icons for the QPKG, drawn in code so the build needs no binary files and stays reproducible.

A blue shield with a white check mark (64x64 and 80x80) and the same in grey (64x64, shown while the
app is disabled). Written as RGBA PNGs by a small stdlib-only PNG writer; QDK names them ``.gif``
whatever their format (qbuild renames PNG sources the same way), and QTS's web UI sniffs the content.

    python3 tools/qpkg_icons.py OUTDIR     # writes the three files for a look
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Tuple

RGBA = Tuple[int, int, int, int]

SUPERSAMPLE = 4
FILL_TOP = (0x2F, 0x80, 0xED)
FILL_BOTTOM = (0x0B, 0x4A, 0xA8)
OUTLINE = (0x08, 0x2B, 0x66)
MARK = (0xFF, 0xFF, 0xFF)


def png_bytes(width: int, height: int, pixels: List[RGBA]) -> bytes:
    """An 8-bit RGBA PNG (filter 0 on every row, zlib level 9): same pixels -> same bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = bytearray()
    for y in range(height):
        raw.append(0)
        for x in range(width):
            raw.extend(pixels[y * width + x])
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b""))


def _shield_half_width(y: float) -> float:
    """Half the shield's width at height y (unit square, y down); 0 outside."""
    top, shoulder, tip = 0.10, 0.52, 0.93
    if y < top or y > tip:
        return 0.0
    if y <= shoulder:
        return 0.36
    t = (y - shoulder) / (tip - shoulder)
    return 0.36 * (1.0 - t ** 1.7)


def _in_shield(x: float, y: float, inset: float = 0.0) -> bool:
    return abs(x - 0.5) <= _shield_half_width(y) - inset and 0.10 + inset <= y


def _near_segment(x: float, y: float, a: Tuple[float, float], b: Tuple[float, float], radius: float) -> bool:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
    px, py = ax + t * dx - x, ay + t * dy - y
    return px * px + py * py <= radius * radius


def _sample(x: float, y: float) -> RGBA:
    if not _in_shield(x, y):
        return (0, 0, 0, 0)
    if not _in_shield(x, y, inset=0.045):
        return OUTLINE + (255,)
    check = ((0.33, 0.50), (0.46, 0.64), (0.69, 0.36))
    if _near_segment(x, y, check[0], check[1], 0.055) or _near_segment(x, y, check[1], check[2], 0.055):
        return MARK + (255,)
    t = (y - 0.10) / 0.83
    color = tuple(int(round(top + (bottom - top) * t)) for top, bottom in zip(FILL_TOP, FILL_BOTTOM))
    return color + (255,)  # type: ignore[return-value]


def render(size: int, tone: Callable[[RGBA], RGBA] = lambda p: p) -> bytes:
    """Anti-aliased by supersampling: each pixel averages SUPERSAMPLE^2 samples (premultiplied alpha)."""
    pixels: List[RGBA] = []
    n = SUPERSAMPLE
    for py in range(size):
        for px in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(n):
                for sx in range(n):
                    r, g, b, a = _sample((px + (sx + 0.5) / n) / size, (py + (sy + 0.5) / n) / size)
                    acc[0] += r * a
                    acc[1] += g * a
                    acc[2] += b * a
                    acc[3] += a
            alpha = acc[3]
            if alpha == 0:
                pixels.append((0, 0, 0, 0))
            else:
                pixels.append(tone((acc[0] // alpha, acc[1] // alpha, acc[2] // alpha, alpha // (n * n))))
    return png_bytes(size, size, pixels)


def _grey(pixel: RGBA) -> RGBA:
    r, g, b, a = pixel
    lum = (r * 299 + g * 587 + b * 114) // 1000
    lum = 96 + lum * 128 // 255  # keep the mark readable on App Center's light background
    return (lum, lum, lum, a)


def icons() -> Dict[str, bytes]:
    """Data-archive name -> PNG bytes, named as qbuild names them."""
    return {
        ".qpkg_icon.gif": render(64),
        ".qpkg_icon_80.gif": render(80),
        ".qpkg_icon_gray.gif": render(64, _grey),
    }


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: qpkg_icons.py OUTDIR\n")
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, data in icons().items():
        (out / (name.lstrip(".").replace(".gif", ".png"))).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
