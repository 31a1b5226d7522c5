#!/usr/bin/env python3
"""Compares two directory trees entry by entry: type, mode, size, mtime (ns), SHA-256 of the
content, link target, and which files are hard links of each other. Exits 1 and lists the first
differences when they differ.

    scripts/compare-trees.py SOURCE RESTORED
"""
import hashlib, os, stat, sys


def listing(root):
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ([] if dirpath != root else [""]):
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = {"mode": oct(stat.S_IMODE(st.st_mode)), "mtime_ns": st.st_mtime_ns}
            if stat.S_ISLNK(st.st_mode):
                entry.update(type="symlink", target=os.readlink(path))
                entry.pop("mtime_ns")  # symlink times are not restored by tar either
            elif stat.S_ISDIR(st.st_mode):
                entry.update(type="dir")
            else:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                entry.update(type="file", size=st.st_size, sha256=h.hexdigest())
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            out[rel] = entry
    # Every name of a hard-linked file points at the group's first name, whatever the walk order.
    for names in inodes.values():
        for rel in names:
            out[rel]["hard_link_of"] = min(names)
    return out


if len(sys.argv) != 3:
    sys.exit(__doc__)
a, b = listing(sys.argv[1]), listing(sys.argv[2])
diffs = [f"only in {sys.argv[1]}: {p}" for p in sorted(a.keys() - b.keys())]
diffs += [f"only in {sys.argv[2]}: {p}" for p in sorted(b.keys() - a.keys())]
diffs += [f"{p}: {a[p]} != {b[p]}" for p in sorted(a.keys() & b.keys()) if a[p] != b[p]]
if diffs:
    print("\n".join(diffs[:20]), file=sys.stderr)
    sys.exit(f"compare-trees: {len(diffs)} differences")
files = sum(1 for e in a.values() if e["type"] == "file")
print(f"compare-trees: identical: {len(a)} entries ({files} files)")
