#!/usr/bin/env python3
"""The closing line of scripts/test.sh: counts every test of every test binary cargo ran, and
counts as failed each test binary that did not run to its end (a crash, an abort, a timeout)
and each one that was built but never started.

usage: test-summary.py EXPECTED LOG [LOG ...]

EXPECTED holds one test executable path per line (from `cargo test --no-run
--message-format=json`); each LOG is the output of one `cargo test` run. Exits 1 when anything
failed or did not run, 0 otherwise.
"""

import os
import re
import sys

START = re.compile(r"^\s+(Running|Doc-tests)\s+(.*)$")
RESULT = re.compile(
    r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured; (\d+) filtered out"
)
EXECUTABLE = re.compile(r"\(([^()]+)\)\s*$")


def binary_name(text: str) -> str:
    """`unittests src/lib.rs (target/checked/deps/wasmcni-0a1b)` -> `wasmcni-0a1b`."""
    match = EXECUTABLE.search(text)
    return os.path.basename(match.group(1)) if match else text.strip()


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as listing:
        expected = {os.path.basename(line.strip()) for line in listing if line.strip()}
    passed = failed = ignored = 0
    started, unfinished, failed_binaries = set(), [], []
    for path in sys.argv[2:]:
        current = None
        with open(path, errors="replace") as log:
            for line in log:
                start = START.match(line)
                if start:
                    if current is not None:
                        unfinished.append(current)
                    current = binary_name(start.group(2))
                    if start.group(1) == "Doc-tests":
                        current = "doc-tests " + current
                    started.add(current)
                    continue
                result = RESULT.match(line)
                if result and current is not None:
                    passed += int(result.group(2))
                    failed += int(result.group(3))
                    ignored += int(result.group(4))
                    if result.group(1) != "ok":
                        failed_binaries.append(current)
                    current = None
        if current is not None:
            unfinished.append(current)
    never_started = sorted(expected - started)
    for name in unfinished:
        print(f"test binary {name} did not run to its end (crashed or was killed)")
    for name in never_started:
        print(f"test binary {name} was built but never ran")
    for name in failed_binaries:
        print(f"test binary {name} had failures")
    not_run = len(unfinished) + len(never_started)
    binaries = len(started | expected)
    if binaries == 0:
        print("tests: no test binary was built or ran (a build error: see above)")
        return 1
    completed = binaries - not_run
    line = f"tests: {passed} passed, {failed} failed, {ignored} ignored; {completed} of {binaries} test binaries ran to their end"
    if not_run:
        line += f", {len(unfinished)} crashed, {len(never_started)} never started"
    print(line)
    return 1 if failed or not_run else 0


if __name__ == "__main__":
    sys.exit(main())
