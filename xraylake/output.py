"""Printing for the CLI: Rich tables for people, JSON for machines (`--json`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

# Piped output (CI logs, files) gets wide tables instead of Rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def print_json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode())


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        numeric = column.endswith(("s", "count")) and column not in {"status", "alias", "reason"}
        out.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    return out
