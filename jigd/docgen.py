"""The command of jigd's generated documents (`python -m jigd.asyncapi`, `python -m
jigd.openapi`): write the document, or with `--check` only say whether the file is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

__all__ = ["dump_yaml", "generated_document_main"]


def dump_yaml(header: str, document: object) -> str:
    """A generated document as YAML text, after its `# ...` header."""
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def generated_document_main(
    module: str,
    description: str,
    default_out: Path,
    render: Callable[[], str],
    argv: list[str] | None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--out", type=Path, default=default_out, help="default: %(default)s")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if the file differs"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m {module}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0
