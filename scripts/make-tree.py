#!/usr/bin/env python3
"""Makes a tree of mixed files for the files engine's benchmark and stress script.

    scripts/make-tree.py ROOT MIB              # about MIB MiB of logs, images, videos, a cache
    scripts/make-tree.py --awkward ROOT MIB    # the same, plus what archives get wrong: names
                                               # over 100 bytes, Unicode names, symlinks, a hard
                                               # link, empty folders, odd modes, old mtimes

Names and sizes are seeded (the same arguments give the same tree shape); the bytes of
"random" files come from os.urandom, so they do not compress.
"""
import os, random, sys

args = sys.argv[1:]
awkward = "--awkward" in args
args = [a for a in args if a != "--awkward"]
if len(args) != 2:
    sys.exit(__doc__)
root, mib = args[0], int(args[1])
rng = random.Random(7)
budget = mib << 20
words = [b"GET", b"POST", b"/api/v1/orders", b"/static/app.js", b"200", b"404", b"user=", b"ms="]
def log_text(n):
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b" %d\n" % rng.randrange(10**9)
    return bytes(out[:n])
kinds = [  # (share of the bytes, folder, size range, content)
    (0.25, "logs", (4 << 10, 256 << 10), "text"),
    (0.35, "uploads/images", (200 << 10, 4 << 20), "random"),
    (0.30, "uploads/video", (40 << 20, 120 << 20), "random"),
    (0.10, "cache/small", (1, 8 << 10), "text"),
]
for share, folder, (lo, hi), content in kinds:
    left, i = int(budget * share), 0
    while left > 0:
        d = os.path.join(root, folder, "d%03d" % (i // 200))
        os.makedirs(d, exist_ok=True)
        n = min(left, rng.randrange(lo, hi))
        with open(os.path.join(d, "f%06d.%s" % (i, "log" if content == "text" else "bin")), "wb") as f:
            f.write(log_text(n) if content == "text" else os.urandom(n))
        left -= n
        i += 1

if awkward:
    long = "l" * 120
    deep = os.path.join(root, "awkward/a/b/c", long)
    os.makedirs(deep)
    os.makedirs(os.path.join(root, "awkward/empty/also-empty"))
    with open(os.path.join(deep, long + ".txt"), "wb") as f:
        f.write(b"deep and long")
    with open(os.path.join(root, "awkward/a/\u00fcn\u00efc\u00f8d\u00e9 \u2014 \u65e5\u672c\u8a9e.txt"), "w") as f:
        f.write("text \u2713" * 100)
    odd = os.path.join(root, "awkward/a/b/odd-mode")
    with open(odd, "wb") as f:
        f.write(b"x")
    os.chmod(odd, 0o741)
    old = os.path.join(root, "awkward/a/old")
    with open(old, "wb") as f:
        f.write(b"from 1990")
    os.utime(old, ns=(631152000 * 10**9, 631152000 * 10**9))
    os.symlink("b/odd-mode", os.path.join(root, "awkward/a/link"))
    os.symlink("c/" + long, os.path.join(root, "awkward/a/b/long-link"))
    os.link(old, os.path.join(root, "awkward/hard-link-to-old"))
    os.chmod(os.path.join(root, "awkward/empty"), 0o700)
    # Folder times last: writing into a folder changes its time.
    os.utime(os.path.join(root, "awkward/a/b"), ns=(946684800 * 10**9 + 5, 946684800 * 10**9 + 5))
