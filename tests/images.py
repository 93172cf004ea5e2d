"""Image checks for the plots tests: the pixel rows of the PNGs Chromium and vl-convert write."""

from __future__ import annotations

import zlib


def png_pixels(data: bytes) -> list[bytes]:
    """The rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes), one bytes object per row."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    position, chunks, header = 8, [], b""
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        position += 12 + length
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    bit_depth, color_type, interlace = header[8], header[9], header[12]
    assert bit_depth == 8 and color_type in (2, 6) and interlace == 0, header
    step = 3 if color_type == 2 else 4
    stride = width * step
    raw = zlib.decompress(b"".join(chunks))
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - step] if x >= step else 0
            up, up_left = previous[x], previous[x - step] if x >= step else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - up_left  # Paeth: the neighbour nearest the guess, ties to left, up, up-left
                candidates = [(abs(guess - value), order, value) for order, value in enumerate((left, up, up_left))]
                line[x] = (line[x] + min(candidates)[2]) & 0xFF
        rows.append(bytes(line[i] for i in range(stride) if i % step < 3))  # drop alpha
        previous = line
    return rows
