#!/usr/bin/env python3
"""Code lines and `unsafe` per crate: the figures docs/architecture.md and
closing notes cite.

Usage: scripts/code-stats.py [REPO_ROOT]   (default: this checkout)

Code lines: lines of the crate's src/ that are neither blank nor `//`
comments, up to the first `#[cfg(test)]` of each file; files named tests.rs,
model_tests.rs, loom_tests.rs and anything under a tests/ directory are left
out. `unsafe`: `unsafe {`, `unsafe fn` and `unsafe impl` on those lines.
"""
import os
import re
import sys

CRATES = ["driver", "xdp", "packet", "hw-sim", "wires", "pipeline", "stack",
          "apps/rxsink", "apps/poolbench"]
TEST_FILES = {"tests.rs", "model_tests.rs", "loom_tests.rs"}
UNSAFE = re.compile(r"\bunsafe\s*(\{|impl\b|fn\b)")


def count(src):
    code = unsafe = 0
    for dirpath, _, files in os.walk(src):
        for name in files:
            path = os.path.join(dirpath, name)
            if not name.endswith(".rs") or name in TEST_FILES or "/tests/" in path:
                continue
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.startswith("#[cfg(test)]"):
                        break
                    t = line.strip()
                    if not t or t.startswith("//"):
                        continue
                    code += 1
                    unsafe += bool(UNSAFE.search(t))
    return code, unsafe


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    print(f"{'crate':16} {'code lines':>10} {'unsafe':>6}")
    for crate in CRATES:
        src = os.path.join(root, crate, "src")
        if os.path.isdir(src):
            code, unsafe = count(src)
            print(f"{crate:16} {code:10d} {unsafe:6d}")


if __name__ == "__main__":
    main()
