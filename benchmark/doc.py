"""docs/benchmarks.md, a section at a time: each benchmark replaces its own section and leaves the others alone."""

from __future__ import annotations

import re
from pathlib import Path

from benchmark import ROOT

DOC = ROOT / "docs" / "benchmarks.md"


def write_section(path: Path, section: str, body: str, first: bool = False) -> None:
    """Replace the '## <section>' section of `path`, or add it (after the title when `first`, else at the end); every
    other section stays as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"## {section}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1)
    else:
        head = re.search(r"^## ", text, re.M) if first else None
        text = (
            (text[: head.start()] + block + "\n" + text[head.start() :]) if head else text.rstrip("\n") + "\n\n" + block
        )
    path.write_text(text.rstrip("\n") + "\n")


def publish(body: str, path: str | None, section: str) -> None:
    """Print a benchmark's table and, with a path (`--write`), write it there as its section."""
    import sys

    print(body)
    if path:
        write_section(Path(path), section, body)
        print(f"\nwritten to {path}", file=sys.stderr)
