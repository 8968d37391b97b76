"""A DEFLATE writer for the HTX inflater's tests (RFC 1951): the bit order and the canonical
Huffman codes, so tests can build blocks zlib would never emit (every path, every fault)."""

from __future__ import annotations

__all__ = ["Bits", "canonical"]


class Bits:
    """LSB-first bit writer (RFC 1951 3.1.1)."""

    def __init__(self) -> None:
        self.acc = self.n = 0
        self.out = bytearray()

    def put(self, value: int, n: int) -> None:
        self.acc |= (value & ((1 << n) - 1)) << self.n
        self.n += n
        while self.n >= 8:
            self.out.append(self.acc & 255)
            self.acc >>= 8
            self.n -= 8

    def code(self, code: int, length: int) -> None:  # Huffman codes go MSB first
        self.put(int(format(code, f"0{length}b")[::-1], 2), length)

    def align(self) -> None:
        if self.n:
            self.put(0, 8 - self.n)

    def done(self) -> bytes:
        self.align()
        return bytes(self.out)


def canonical(lengths: list[int]) -> list[int | None]:
    count = [0] * 16
    for n in lengths:
        count[n] += 1
    count[0] = 0
    code, first = 0, [0] * 16
    for n in range(1, 16):
        code = (code + count[n - 1]) << 1
        first[n] = code
    codes: list[int | None] = []
    for n in lengths:
        codes.append(first[n] if n else None)
        if n:
            first[n] += 1
    return codes
