"""draft"""
from __future__ import annotations

import numpy as np

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
_MP = np.uint64((1 << 61) - 1)


def build():
    import numba as nb

    P1, P2, P3, P4, P5, MP = _P1, _P2, _P3, _P4, _P5, _MP
    U = nb.types.uint64

    @nb.njit(inline="always")
    def rotl(x, r):
        return (x << np.uint64(r)) | (x >> np.uint64(64 - r))

    @nb.njit(inline="always")
    def xround(acc, lane):
        acc = acc + lane * P2
        acc = rotl(acc, 31)
        return acc * P1

    @nb.njit(inline="always")
    def xmerge(acc, v):
        acc ^= xround(np.uint64(0), v)
        return acc * P1 + P4

    @nb.njit(inline="always")
    def xaval(h):
        h ^= h >> np.uint64(33)
        h *= P2
        h ^= h >> np.uint64(29)
        h *= P3
        h ^= h >> np.uint64(32)
        return h

    @nb.njit(inline="always")
    def read64(d, p):
        v = np.uint64(0)
        for k in range(8):
            v |= np.uint64(d[p + k]) << np.uint64(8 * k)
        return v

    @nb.njit(inline="always")
    def read32(d, p):
        v = np.uint64(0)
        for k in range(4):
            v |= np.uint64(d[p + k]) << np.uint64(8 * k)
        return v

    @nb.njit(cache=True)
    def xxh64_bytes(d, start, end, seed):
        n = end - start
        p = start
        if n >= 32:
            v1 = seed + P1 + P2
            v2 = seed + P2
            v3 = seed
            v4 = seed - P1
            while p + 32 <= end:
                v1 = xround(v1, read64(d, p))
                v2 = xround(v2, read64(d, p + 8))
                v3 = xround(v3, read64(d, p + 16))
                v4 = xround(v4, read64(d, p + 24))
                p += 32
            h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)
            h = xmerge(h, v1)
            h = xmerge(h, v2)
            h = xmerge(h, v3)
            h = xmerge(h, v4)
        else:
            h = seed + P5
        h += np.uint64(n)
        while p + 8 <= end:
            h ^= xround(np.uint64(0), read64(d, p))
            h = rotl(h, 27) * P1 + P4
            p += 8
        if p + 4 <= end:
            h ^= read32(d, p) * P1
            h = rotl(h, 23) * P2 + P3
            p += 4
        while p < end:
            h ^= np.uint64(d[p]) * P5
            h = rotl(h, 11) * P1
            p += 1
        return xaval(h)

    return xxh64_bytes
