#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets whose inputs are not plain text files
(Fuzz/corpus/{config,registers,modbus,buffer,simchip}); the TOML and JSON seeds are hand-made.
Deterministic: run it again after changing an input format, and commit what it writes."""
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "Fuzz", "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


# config: configuration bytes, NUL, profile bytes (every profile named reads as that one).
configs = ["Firmware-config/examples/wagon.toml", "Firmware-config/examples/demo.toml"]
profiles = sorted(
    [os.path.join("Firmware-config/profiles", p) for p in os.listdir(os.path.join(ROOT, "Firmware-config/profiles"))]
    + [os.path.join("Tests/IntegrationTests/Fixtures", p)
       for p in ["all-types.toml", "field-types.toml", "no-reading.toml", "three-clusters.toml"]])
for ci, config in enumerate(configs):
    for pi, profile in enumerate(profiles):
        write("config", f"seed-{ci}-{pi}", read(config) + b"\0" + read(profile))

# registers: type selector, detail, order, flags (bit 0-1 table, 2 scale, 3 offset, 4-5 sentinels), words.
for selector in range(16):
    for order in range(4):
        flags = [0, 4 | 8, 16][(selector + order) % 3]
        head = bytes([selector, 7, order, flags])
        extra = struct.pack(">d", 0.1) + struct.pack(">d", -40.0) if flags & 4 else b""
        extra += struct.pack(">Q", 0xFFFF) if flags & 16 else b""
        words = bytes((selector * 37 + i * 11) & 0xFF for i in range(16))
        write("registers", f"seed-{selector:02d}-{order}", head + extra + words)

# modbus: framing, table, unit, reply-unit flag, address, count, transaction id, mode, then data or bytes.
for framing in range(3):
    for mode in range(6):
        for table in (0, 3):
            head = bytes([framing, table, 17, 0]) + struct.pack(">HHH", 100, 9, 0x1234) + bytes([mode])
            tail = bytes(range(1, 40)) if mode != 5 else bytes([2])
            write("modbus", f"seed-{framing}-{mode}-{table}", head + tail)


# buffer: flags (bit 0 writable), then chunks: tag, u16 length, content. Tags 0-2 segment
# (.rgb .rgt .rgc, u16 first seq before the content), 3-5 raw acked/reserved/drops, 6-7
# a well-formed acked (tag 6) or reserved (tag 14) record.
def frame(seq, payload, flags=2):
    body = struct.pack("<QBBH", seq, flags, 0, 0x4752) + payload
    return struct.pack("<II", len(payload), zlib.crc32(body)) + body


def record(seq):
    return b'{"seq":%d,"ts":"2026-11-29T02:40:00.000Z","kind":"sample","source":"w","values":{"t":%d}}' % (seq, seq)


def segment(first, content, kind=0):
    return bytes([kind]) + struct.pack(">HH", len(content), first) + content


frames = b"".join(frame(s, record(s)) for s in range(1, 6))
torn = frames[:-7]
flipped = bytearray(frames)
flipped[60] ^= 0x20
backwards = frame(5, record(5)) + frame(3, record(3)) + frame(6, record(6))
losses = frame(1, record(1)) + frame(2, b'{"seq":2,"kind":"event","event":"records_lost","from_seq":3,"to_seq":9}', 1 | 0) \
    + frame(10, record(10))
for writable in (0, 1):
    write("buffer", f"seed-intact-{writable}", bytes([writable]) + segment(1, frames))
    write("buffer", f"seed-torn-{writable}", bytes([writable]) + segment(1, torn))
    write("buffer", f"seed-flipped-{writable}", bytes([writable]) + segment(1, bytes(flipped)))
    write("buffer", f"seed-backwards-{writable}", bytes([writable]) + segment(5, backwards))
    write("buffer", f"seed-two-{writable}",
          bytes([writable]) + segment(1, frames) + segment(8, frame(8, record(8)) + frame(9, record(9)), 1))
    write("buffer", f"seed-state-{writable}",
          bytes([writable]) + segment(1, frames) + bytes([6]) + struct.pack(">H", 0) + struct.pack(">Q", 3)
          + bytes([14]) + struct.pack(">H", 0) + struct.pack(">Q", 70000))
    write("buffer", f"seed-losses-{writable}", bytes([writable]) + segment(1, losses))

# simchip: watched count and lines, active-low, u64 start (ns, the monotonic clock), u64 realtime
# clock and u64 libgpiod stamp (for GPIOEventClock), read size, then the stream.
streams = [
    b"levels 1=0 2=1\nedge 1 1 1000\nedge 2 0 2000\n",
    b"edge 5 1 10\nedge 1 1 -9223372036854775808\nedge 2 7 3\ngarbage\nedge 2 1 9223372036854775807\n",
    b'{"name":"gpiosim","label":"x","lines":[{"offset":1,"level":1}]}\nlevels 1=1\n',
    b"error busy 1 other\nerror range 40 32\nedge 1 0 5",
    b"x" * 200,
]
for index, stream in enumerate(streams):
    start = 10**9 * (index + 1)
    realtime = 1_800_000_000 * 10**9
    stamp = [start + 5, realtime + 7, -2**63, 2**63 - 1, 0][index]
    head = bytes([2, 1, 2, index & 1]) + struct.pack(">qqq", start, realtime, stamp) + bytes([index * 50])
    write("simchip", f"seed-{index}", head + stream)
