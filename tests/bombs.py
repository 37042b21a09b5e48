"""Decompression bombs for the bounded-decoding tests, built in milliseconds:
a PNG of 23000x23000 zero pixels (1.5 MB, 1.59 GB decoded) and an .npz whose
one array inflates to 2 GiB from 2 MB, without compressing anything (the
deflate streams are written directly)."""

import struct
import zipfile
import zlib

import numpy as np


class _Bits:
    """A deflate bit stream (least significant bit first)."""

    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, count):
        self.acc |= value << self.n
        self.n += count
        while self.n >= 8:
            self.out.append(self.acc & 255)
            self.acc >>= 8
            self.n -= 8

    def code(self, bits):  # a Huffman code: most significant bit first
        for bit in bits:
            self.put(int(bit), 1)

    def zeros(self, count):
        if self.n and count >= 8 - self.n:
            count -= 8 - self.n
            self.out.append(self.acc & 255)
            self.acc = self.n = 0
        whole, count = divmod(count, 8)
        self.out += bytes(whole)
        self.put(0, count)

    def done(self):
        if self.n:
            self.put(0, 8 - self.n)
        return bytes(self.out)


def deflate_zeros(total, final=True):
    """A raw deflate block of `total` (>= 1) zero bytes: one dynamic-Huffman
    block where literal 0 and end-of-block take 2 bits and a 258-byte copy at
    distance 1 takes 2 bits (length code '0', distance code '0')."""
    b = _Bits()
    b.put(1 if final else 0, 1)
    b.put(2, 2)  # dynamic Huffman
    b.put(29, 5)  # 286 literal/length codes
    b.put(0, 5)  # 1 distance code
    b.put(14, 4)  # 18 code-length codes, in the format's order:
    for symbol in (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1):
        b.put({18: 1, 2: 2, 1: 2}.get(symbol, 0), 3)
    # Code lengths: literal 0 -> 2, 255 zeros, 256 (end) -> 2, 28 zeros,
    # 285 (length 258) -> 1; distance 0 -> 1. Code-length codes: 18 '0',
    # 1 '10', 2 '11'.
    b.code("11")
    b.code("0")
    b.put(138 - 11, 7)
    b.code("0")
    b.put(117 - 11, 7)
    b.code("11")
    b.code("0")
    b.put(28 - 11, 7)
    b.code("10")
    b.code("10")
    b.code("10")  # literal 0
    copies, rest = divmod(total - 1, 258)
    b.zeros(2 * copies)
    for _ in range(rest):
        b.code("10")
    b.code("11")  # end of block
    return b.done()


def png_bomb(side=23000, channels=3):
    """A valid PNG of `side` x `side` black pixels (8-bit RGB or grey)."""
    def chunk(kind, body):
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    raw = side * (1 + side * channels)  # a filter byte per row, all zero
    stream = (b"\x78\x01" + deflate_zeros(raw)
              + struct.pack(">I", ((raw % 65521) << 16) | 1))
    header = struct.pack(">IIBBBBB", side, side, 8, {1: 0, 3: 2}[channels],
                         0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def npz_with_bomb(path, arrays, name, shape):
    """Writes `arrays` as an .npz plus one float32 array `name` of `shape`
    (zeros) whose member is a deflate bomb: its header is honest, its zip
    entry declares the full size, and its CRC is not computed (a reader that
    decompresses it learns that only at the end)."""
    np.savez(path, **arrays)
    header = _npy_header(shape)
    size = len(header) + int(np.prod(shape)) * 4
    stored = struct.pack("<BHH", 0, len(header), len(header) ^ 0xFFFF) + header
    data = stored + deflate_zeros(size - len(header))
    member = (name + ".npy").encode()
    with zipfile.ZipFile(path) as archive:
        entries = [(i, archive.read(i)) for i in archive.infolist()]
    with open(path, "wb") as f:
        directory = b""
        for info, content in entries:
            directory += _entry(f, info.filename.encode(), zlib.compress(
                content)[2:-4], zlib.crc32(content), len(content))
        directory += _entry(f, member, data, 0, size)
        start = f.tell()
        f.write(directory)
        count = len(entries) + 1
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count,
                            len(directory), start, 0))
    return path


def _npy_header(shape):
    text = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    total = 10 + len(text) + 1
    text += " " * (-total % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def _entry(f, name, data, crc, size):
    """Writes a deflated zip member; returns its central directory entry."""
    offset = f.tell()
    f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc,
                        len(data), size, len(name), 0) + name)
    f.write(data)
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc,
                       len(data), size, len(name), 0, 0, 0, 0, 0,
                       offset) + name
