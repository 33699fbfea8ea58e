#!/usr/bin/env python3
"""Side by side: criterion outputs of two builds' micro benches, alternated.

Reads DIR/before.N.txt and DIR/now.N.txt (the stdout of `micro --bench`,
one file per round), takes each bench's median estimate, and prints the
rounds of both builds per bench, flagging the benches where `now` was
slower than `before` in every round.

Usage: scripts/micro_cmp.py DIR
"""
import collections
import glob
import re
import sys

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def medians(path):
    """Bench name -> criterion's median estimate in ns."""
    out = {}
    name = None
    for line in open(path):
        line = line.rstrip()
        # The name is on its own line, or before `time:` when it is short.
        m = re.match(r"^(\S+/\S+)(\s+time:.*)?$", line)
        if m and not line.startswith("Benchmarking"):
            name = m.group(1)
            line = m.group(2) or ""
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m and name:
            out[name] = float(m.group(1)) * UNITS[m.group(2)]
            name = None
    return out


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.1f} ns"


def main():
    rounds = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(glob.glob(sys.argv[1] + "/*.txt")):
        build = path.rsplit("/", 1)[-1].split(".")[0]
        if build not in ("before", "now"):
            continue
        for bench, ns in medians(path).items():
            rounds[bench][build].append(ns)
    print(f"{'bench':45s} {'before':32s} {'now':32s} now slower in every round")
    for bench, by in rounds.items():
        before, now = by["before"], by["now"]
        slower = len(before) == len(now) and all(n > b for n, b in zip(now, before))
        print(f"{bench:45s} {' / '.join(map(fmt, before)):32s} "
              f"{' / '.join(map(fmt, now)):32s} {'yes' if slower else ''}")


if __name__ == "__main__":
    main()
