#!/usr/bin/env python3
# make-fuzz-seeds.py — writes the seed inputs of fuzz-store.c (valid and damaged segment
# files, see the input layout there) into fuzz/corpus/store/. Run from the repository root.
import os
import struct
import zlib

OUT = "fuzz/corpus/store"


def record(seq, payload, enq=1000, exp=0):
    body = struct.pack("<IIQqq", len(payload), 0, seq, enq, exp)
    crc = zlib.crc32(body + payload) & 0xFFFFFFFF
    return b"LQR1" + struct.pack("<I", crc) + body + payload


def records(first, last, **kw):
    return b"".join(record(s, b"msg-%d-" % s + b"x" * (s % 37), **kw) for s in range(first, last + 1))


def seed(name, segments, flags=0, now=0, floor=None):
    out = bytes([flags | (1 if floor is not None else 0), now])
    if floor is not None:
        out += struct.pack("<Q", floor)
    for i, (step, data) in enumerate(segments):
        out += bytes([step]) + struct.pack("<H", len(data)) + data
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(out)


os.makedirs(OUT, exist_ok=True)
seed("one-segment", [(0, records(1, 10))])
seed("two-segments-checkpoint", [(0, records(1, 5)), (1, records(6, 10))], floor=4)
mixed = b"".join(record(s, b"e%d" % s, exp=(3000 if s % 2 else 0)) for s in range(1, 13))
seed("expiry-mixed", [(0, mixed)], now=5)
whole = records(1, 8)
seed("torn-tail", [(0, whole[:-9])])
mid = bytearray(records(1, 8))
mid[120] ^= 0xFF
seed("corrupt-middle", [(0, bytes(mid))], flags=2)
seed("rewind-small-window", [(0, records(1, 40))], flags=2 | (1 << 2))
seed("small-cap", [(0, records(1, 30)), (7, records(31, 60))], flags=0x20 | (2 << 2))
seed("empty-and-garbage", [(0, records(1, 3)), (0, b""), (0, bytes(range(256)) * 2), (3, records(20, 25))])
seed("overlapping-names", [(2, records(1, 20)), (0, records(15, 30))], floor=12)
seed("floor-beyond", [(0, records(1, 10))], floor=1000)
# re-sealed (flags bit 6): the harness fixes CRCs, so mutated seqs and lengths stay "valid"
seed("resealed", [(0, records(1, 12)), (2, records(13, 20, exp=4000))], flags=0x40, now=3)
seed("resealed-rewind", [(0, records(1, 30))], flags=0x40 | 2 | (1 << 2), floor=3)
seed("reverse-acks-expiry", [(0, records(1, 20, exp=4500))], flags=0x80 | 0x40 | (3 << 2), now=4)
# a floor at the seq below an empty write segment's name (all acked, reclaimed): taken as it is
seed("floor-at-empty-segment", [(0, records(1, 10)), (3, b"")], floor=13)
