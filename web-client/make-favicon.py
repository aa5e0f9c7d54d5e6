#!/usr/bin/env python3
"""Writes the web client's icon: app/favicon.svg and app/favicon.ico (16, 32 and 48 px PNGs).

Both come from the shapes below, so they cannot drift apart: a white speech bubble on the
top bar's navy, in a 32×32 box. The ICO exists because browsers ask for /favicon.ico when a
page names no icon (and some still do anyway); pages get the SVG through <link rel="icon">.
Python's standard library only, and deterministic: rerunning it rewrites identical bytes.

Usage: web-client/make-favicon.py   (then commit app/favicon.svg and app/favicon.ico)
"""

import os
import struct
import zlib

NAVY = (0x13, 0x29, 0x4B)
WHITE = (0xFF, 0xFF, 0xFF)
BOX = 32
# (x, y, width, height, corner radius, colour), painted in order.
RECTS = [(0, 0, 32, 32, 7, NAVY), (6, 7, 20, 14, 4, WHITE)]
# The bubble's tail: a triangle below its left half.
TAIL = ((10, 20), (10, 26), (17, 20))
SIZES = (16, 32, 48)
# Samples per pixel along each axis (antialiasing by coverage).
SUPERSAMPLE = 8

HERE = os.path.dirname(os.path.abspath(__file__))


def svg():
    def hexcolour(c):
        return "#%02x%02x%02x" % c

    shapes = [
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{r}" fill="{hexcolour(c)}"/>'
        for (x, y, w, h, r, c) in RECTS
    ]
    points = " ".join(f"{x},{y}" for (x, y) in TAIL)
    shapes.append(f'<polygon points="{points}" fill="{hexcolour(WHITE)}"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {BOX} {BOX}">'
        + "".join(shapes)
        + "</svg>\n"
    )


def in_rounded_rect(px, py, rect):
    x, y, w, h, r, _ = rect
    if not (x <= px <= x + w and y <= py <= y + h):
        return False
    # Distance to the nearest corner centre, only within the corner squares.
    cx = min(max(px, x + r), x + w - r)
    cy = min(max(py, y + r), y + h - r)
    return (px - cx) ** 2 + (py - cy) ** 2 <= r * r


def in_triangle(px, py, tri):
    (ax, ay), (bx, by), (cx, cy) = tri

    def side(x1, y1, x2, y2):
        return (px - x2) * (y1 - y2) - (x1 - x2) * (py - y2)

    d1, d2, d3 = side(ax, ay, bx, by), side(bx, by, cx, cy), side(cx, cy, ax, ay)
    has_neg = d1 < 0 or d2 < 0 or d3 < 0
    has_pos = d1 > 0 or d2 > 0 or d3 > 0
    return not (has_neg and has_pos)


def colour_at(px, py):
    """The colour at a point of the 32×32 box, or None outside every shape."""
    colour = None
    for rect in RECTS:
        if in_rounded_rect(px, py, rect):
            colour = rect[5]
    if in_triangle(px, py, TAIL):
        colour = WHITE
    return colour


def rgba(size):
    """size×size straight-alpha RGBA rows, each pixel the average of its samples."""
    rows = []
    scale = BOX / size
    n = SUPERSAMPLE
    for j in range(size):
        row = bytearray()
        for i in range(size):
            r = g = b = hits = 0
            for sj in range(n):
                for si in range(n):
                    c = colour_at((i + (si + 0.5) / n) * scale, (j + (sj + 0.5) / n) * scale)
                    if c is not None:
                        r, g, b, hits = r + c[0], g + c[1], b + c[2], hits + 1
            if hits:
                row += bytes((r // hits, g // hits, b // hits, hits * 255 // (n * n)))
            else:
                row += bytes(4)
        rows.append(bytes(row))
    return rows


def png(size):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\0" + row for row in rgba(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def ico(sizes):
    images = [png(s) for s in sizes]
    out = struct.pack("<HHH", 0, 1, len(images))
    offset = 6 + 16 * len(images)
    for size, data in zip(sizes, images):
        # Width and height 0 mean 256; planes 1, 32 bits per pixel.
        out += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    return out + b"".join(images)


def main():
    app = os.path.join(HERE, "app")
    with open(os.path.join(app, "favicon.svg"), "w", encoding="utf-8") as f:
        f.write(svg())
    with open(os.path.join(app, "favicon.ico"), "wb") as f:
        f.write(ico(SIZES))


if __name__ == "__main__":
    main()
