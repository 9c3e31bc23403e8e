#!/usr/bin/env python3
"""gguf_diff.py A.gguf B.gguf - the tensors of two GGUF files compared by
name: the same names, types, shapes (trailing 1s aside) and data bytes,
whatever their order. Prints each difference and a summary line
("same: N tensors, types {...}" or "differ: ..."); exit 0 same, 1 differ."""
import struct
import sys

# type: (name, block elements, block bytes) for the types moemesh reads
TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
         6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34),
         10: ("q2_K", 256, 84), 11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144),
         13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 20: ("iq4_nl", 32, 18),
         23: ("iq4_xs", 256, 136), 30: ("bf16", 1, 2)}
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
          12: "d"}


def read(path):
    """{name: (type, shape, bytes)} of a GGUF file."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def get(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return v

    def string():
        nonlocal pos
        n = get("Q")
        pos += n
        return buf[pos - n:pos].decode()

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = get("I"), get("Q")
            return [value(et) for _ in range(n)]
        return get(SCALAR[t])

    if buf[:4] != b"GGUF":
        sys.exit("%s: not a GGUF file" % path)
    pos = 8
    n_tensors, n_kv = get("Q"), get("Q")
    kv = {}
    for _ in range(n_kv):
        k = string()
        kv[k] = value(get("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        shape = [get("Q") for _ in range(get("I"))]
        t, off = get("I"), get("Q")
        while len(shape) > 1 and shape[-1] == 1:
            shape.pop()
        infos.append((name, t, shape, off))
    align = kv.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    out = {}
    for name, t, shape, off in infos:
        if t not in TYPES:
            sys.exit("%s: %s has type %d, unknown here" % (path, name, t))
        n = 1
        for d in shape:
            n *= d
        size = n // TYPES[t][1] * TYPES[t][2]
        out[name] = (t, shape, buf[base + off:base + off + size])
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gguf_diff.py A.gguf B.gguf")
    a, b = read(sys.argv[1]), read(sys.argv[2])
    bad = 0
    for name in sorted(set(a) ^ set(b)):
        print("only in %s: %s" % (sys.argv[1] if name in a else sys.argv[2], name))
        bad += 1
    for name in a:
        if name not in b:
            continue
        (ta, sa, da), (tb, sb, db) = a[name], b[name]
        if ta != tb or sa != sb:
            print("%s: %s %s vs %s %s" % (name, TYPES[ta][0], sa, TYPES[tb][0], sb))
            bad += 1
        elif da != db:
            print("%s: %s, data differ" % (name, TYPES[ta][0]))
            bad += 1
    count = {}
    for t, _, _ in a.values():
        count[TYPES[t][0]] = count.get(TYPES[t][0], 0) + 1
    types = " ".join("%s %d" % kv for kv in sorted(count.items()))
    print("%s: %d tensors (%s)" % ("differ in %d" % bad if bad else "same", len(a), types))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
