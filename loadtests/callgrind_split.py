#!/usr/bin/env python3
"""Where a proxy's user-space instructions go, from a callgrind profile (loadtests/instructions.sh with
CALLGRIND_OUT=DIR): each function's own (exclusive) instructions, summed by Rust crate for Rust code and by
shared object otherwise, divided by the requests counted.

    loadtests/callgrind_split.py [--requests N] [--top K] FILE.callgrind [FILE ...]

Prints a Markdown table per file: instructions per request and share of the total, largest first.
"""
import argparse
import os
import re
import sys

# Crates that only wrap generic code of other crates: their frames are charged to the type's crate.
GENERIC = {"core", "alloc", "std", "T", "F", "S", "B", "I", "&", "&mut", "futures_util", "futures_core", "str", "bool"}
GENERIC |= {f"{sign}{bits}" for sign in "ui" for bits in ("8", "16", "32", "64", "128", "size")}
# ring's C and assembly functions (no Rust path in their names).
RING_C = ("ring_core_", "fe_", "ge_", "x25519_", "table_select", "sc_")


def crate_of(function: str) -> str:
    """The crate a Rust symbol belongs to: the self type's crate, or the trait's for a generic impl."""
    name = function.strip()
    if name.startswith("<"):
        inner = name[1:]
        self_type, _, rest = inner.partition(" as ")
        first = re.split(r"::|<| ", self_type.lstrip("&*").removeprefix("mut ").removeprefix("dyn "), maxsplit=1)[0]
        if first not in GENERIC and rest:
            return first
        trait = rest.lstrip("&")
        trait_crate = re.split(r"::|<", trait, maxsplit=1)[0] if trait else first
        return trait_crate if trait_crate not in ("core", "alloc", "std") or first in GENERIC else first
    return re.split(r"::|<", name, maxsplit=1)[0]


def self_costs(path: str) -> tuple[dict[tuple[str, str], int], int]:
    """Exclusive Ir per (object, function) and the profile's total."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    costs: dict[tuple[str, str], int] = {}
    obj = fn = ""
    after_calls = False
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line[0].isdigit() or line[0] in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if after_calls:
                    after_calls = False  # the inclusive cost of a call, not this function's own
                    continue
                costs[(obj, fn)] = costs.get((obj, fn), 0) + ir
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key in ("ob", "fn", "cob", "cfn"):
                kind = key[-2:]  # a called object or function shares the numbering of its kind
                m = re.match(r"\((\d+)\)(?: (.*))?", value)
                if m:
                    ident, text = m.groups()
                    if text is not None:
                        names[kind][ident] = text
                    value = names[kind].get(ident, value)
                if key in ("cob", "cfn"):
                    continue
                if key == "ob":
                    obj = value
                else:
                    fn = value
            elif key == "calls":
                after_calls = True
            elif key == "summary" or key == "totals":
                total = int(value.split()[0])
    return costs, total


def group(costs: dict[tuple[str, str], int]) -> dict[str, int]:
    """Exclusive Ir by crate (for Rust binaries) or shared object."""
    groups: dict[str, int] = {}
    for (obj, fn), ir in costs.items():
        base = os.path.basename(obj)
        if "libc.so" in base and "mem" in fn:
            label = "libc: memcpy/memmove/memset"
        elif fn.startswith(RING_C):
            label = "ring (C and assembly)"
        elif fn.startswith(("mi_", "_mi_")):
            label = "mimalloc"
        elif ".so" in base:
            label = base.split(".so")[0]
        elif "::" in fn or fn.startswith("<"):
            label = crate_of(fn)
        else:
            label = f"{base}: {fn}" if base in ("dualstack-ingress", "minimal_proxy") else base
        groups[label] = groups.get(label, 0) + ir
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted (instructions.sh N)")
    parser.add_argument("--top", type=int, default=14, help="rows per table; the rest is summed")
    parser.add_argument("--label", help="the table's title instead of the file name (one file)")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for path in args.files:
        costs, total = self_costs(path)
        groups = sorted(group(costs).items(), key=lambda kv: -kv[1])
        total = total or sum(v for _, v in groups)
        label = args.label or os.path.basename(path)
        print(f"\n{label}: {total // args.requests:,} instructions per request\n")
        print("| crate or object | instructions per request | share |\n|---|---:|---:|")
        shown = groups[: args.top]
        for label, ir in shown:
            print(f"| {label} | {ir // args.requests:,} | {100 * ir / total:.1f}% |")
        rest = sum(ir for _, ir in groups[args.top :])
        if rest:
            print(f"| other | {rest // args.requests:,} | {100 * rest / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
