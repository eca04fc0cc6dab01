"""``make bench``: run every benchmark section and write bench/RESULTS.md.

Each ``bench/bench_<area>.py`` starts what it needs (its own redis-server and servers)
and returns a Markdown section; figures are compared against a peer measured in the
same run, since absolute times on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

SECTIONS = ["load", "api", "analytics", "market", "charts", "queue"]
RESULTS = Path(__file__).with_name("RESULTS.md")
MARKER = re.compile(r"^<!-- section: (\w+) -->\n", re.M)


def header() -> str:
    return "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `make bench` (`.venv/bin/python -m bench.run`). Sections can be rerun",
            "alone (`.venv/bin/python -m bench.run queue charts`): those are replaced here and",
            "the others kept, so each section says when it ran and how busy the machine was.",
            "",
            f"- machine: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}",
            "",
        ]
    )


def stamp() -> str:
    """When a section ran, and the machine's load as it started: figures from a busy
    moment on a shared machine are not comparable with a quiet one."""
    return (
        f"Section run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at its start."
    )


def kept_sections(text: str) -> dict[str, str]:
    """The sections of an existing RESULTS.md, by name (after their marker lines)."""
    parts = MARKER.split(text)
    return {name: body.rstrip() + "\n" for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sections", nargs="*", help=f"some of {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.sections = args.sections or SECTIONS
    sections = kept_sections(RESULTS.read_text()) if RESULTS.exists() else {}
    failed = 0
    for name in args.sections:
        print(f"== bench {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        when = stamp()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            section = module.run()
        except Exception:  # noqa: BLE001 - a failed section is reported, the rest still run
            failed += 1
            section = f"## {name}\n\nFAILED:\n\n```\n{traceback.format_exc()}```\n"
        print(section, flush=True)
        print(f"== {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        sections[name] = f"{section.rstrip()}\n\n{when}\n"
    if not args.no_write:
        body = [f"<!-- section: {n} -->\n{sections[n]}" for n in SECTIONS if n in sections]
        RESULTS.write_text("\n".join([header(), *body]))
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
