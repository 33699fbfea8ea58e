#!/usr/bin/env python3
"""Locked (atomic read-modify-write) instructions per request, per function.

Reads two callgrind profiles of `compare --profile MODE K D REQUESTS` taken
with --dump-instr=yes at two request counts, finds the instructions of the
binary that lock the bus (`lock`-prefixed, and `xchg` with a memory
operand, which locks implicitly) with objdump, and prints how many of them
each function executes per request (the difference between the profiles,
divided by the difference in requests). See scripts/locked.sh.

Usage: locked.py BINARY PROFILE_SMALL N_SMALL PROFILE_LARGE N_LARGE
"""
import collections
import re
import subprocess
import sys


def locked_addresses(binary):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary],
                         capture_output=True, text=True, check=True).stdout
    pat = re.compile(r"^\s+([0-9a-f]+):\s+(lock |xchg\s+%[a-z0-9]+,-?(0x[0-9a-f]+)?\()")
    return {int(m.group(1), 16) for m in map(pat.match, out.splitlines()) if m}


def per_function(profile, binary_name, locked):
    """Executions of locked instructions of `binary_name`, by function."""
    counts = collections.Counter()
    names = {}
    in_binary = False
    fn = "?"
    last = 0
    skip_next = False
    for line in open(profile):
        line = line.rstrip("\n")
        if not line:
            continue
        m = re.match(r"(c?)(ob|fn|fl|fi|fe)=\((\d+)\)(?: (.*))?", line)
        if m:
            called, kind, ident, name = m.groups()
            if name:
                names[(kind, ident)] = name
            if not called and kind == "ob":
                in_binary = binary_name in names.get(("ob", ident), "")
            elif not called and kind == "fn":
                fn = names.get(("fn", ident), "?")
            continue
        if line.startswith("calls="):
            skip_next = True  # the next cost line is the call's inclusive cost
            continue
        if line[0] in "0123456789+-*":
            parts = line.split()
            p = parts[0]
            if p.startswith("0x"):
                addr = int(p, 16)
            elif p[0] == "+":
                addr = last + int(p[1:])
            elif p[0] == "-":
                addr = last - int(p[1:])
            elif p == "*":
                addr = last
            else:
                addr = int(p)
            last = addr
            if skip_next:
                skip_next = False
                continue
            if in_binary and addr in locked and len(parts) >= 3:
                counts[fn] += int(parts[2])
    return counts


def main():
    binary, small, n_small, large, n_large = sys.argv[1:6]
    n = int(n_large) - int(n_small)
    locked = locked_addresses(binary)
    name = binary.rsplit("/", 1)[-1]
    a = per_function(small, name, locked)
    b = per_function(large, name, locked)
    diff = {k: (b[k] - a.get(k, 0)) / n for k in b}
    print(f"locked instructions per request: {sum(diff.values()):.2f}")
    for k, v in sorted(diff.items(), key=lambda kv: -kv[1]):
        if v >= 0.05:
            print(f"  {v:6.2f}  {k[:140]}")


if __name__ == "__main__":
    main()
