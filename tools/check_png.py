#!/usr/bin/env python3
"""Decode PNG files with Python's standard library only (zlib + struct) and check them.

An independent check of stapes' PNG encoder (speech/src/plot/png.rs): verifies the signature,
every chunk's CRC-32, the IHDR fields (8-bit RGB, no interlace), the zlib stream, and undoes
the five scanline filters (None, Sub, Up, Average, Paeth). Prints one line per file: size,
compressed size and ratio, filter types used, distinct colours.

    python3 tools/check_png.py a.png b.png
    python3 tools/check_png.py plot.png --size 800x500 --pixel 0,0=255,255,255

Exit status 1 when any file fails.
"""

import argparse
import struct
import sys
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode(data):
    """Returns (width, height, rows of RGB bytes, filter type counts, IDAT byte count)."""
    if data[:8] != SIGNATURE:
        raise ValueError("bad signature")
    pos, ihdr, idat, ended = 8, None, b"", False
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError("truncated chunk header")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            ended = True
        pos += 12 + length
    if not ended or pos != len(data):
        raise ValueError("missing IEND or trailing bytes")
    if ihdr is None or len(ihdr) != 13:
        raise ValueError("missing or bad IHDR")
    width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", ihdr)
    if (depth, ctype, comp, filt, interlace) != (8, 2, 0, 0, 0):
        raise ValueError(f"not 8-bit RGB non-interlaced: {(depth, ctype, comp, filt, interlace)}")
    raw = zlib.decompress(idat)  # checks the zlib header and the Adler-32 trailer
    stride = width * 3
    if len(raw) != (stride + 1) * height:
        raise ValueError(f"{len(raw)} bytes of scanlines for {width}x{height}")
    rows, prev, counts = [], bytearray(stride), [0] * 5
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f > 4:
            raise ValueError(f"bad filter type {f} on row {y}")
        counts[f] += 1
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            pred = (0, a, b, (a + b) // 2, paeth(a, b, c))[f]
            line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, counts, len(idat)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--size", help="expected WIDTHxHEIGHT")
    ap.add_argument("--pixel", action="append", default=[], help="expected X,Y=R,G,B (repeatable)")
    args = ap.parse_args()
    failed = False
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            w, h, rows, counts, idat = decode(data)
            if args.size and f"{w}x{h}" != args.size:
                raise ValueError(f"size {w}x{h}, expected {args.size}")
            for spec in args.pixel:
                xy, rgb = spec.split("=")
                x, y = map(int, xy.split(","))
                want = tuple(map(int, rgb.split(",")))
                got = tuple(rows[y][3 * x : 3 * x + 3])
                if got != want:
                    raise ValueError(f"pixel ({x}, {y}) is {got}, expected {want}")
            colours = len({r[i : i + 3] for r in rows for i in range(0, len(r), 3)})
            names = ("none", "sub", "up", "avg", "paeth")
            used = ", ".join(f"{names[i]} {n}" for i, n in enumerate(counts) if n)
            print(
                f"OK   {path}: {w}x{h}, {len(data)} bytes ({100 * idat / (w * h * 3):.1f}% of raw), "
                f"filters: {used}; {colours} colours"
            )
        except (OSError, ValueError, zlib.error) as e:
            failed = True
            print(f"FAIL {path}: {e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
