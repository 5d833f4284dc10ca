"""How every command writes: fitted to a terminal, plain whole lines to anything else.

A terminal gets rich's tables and colours, laid out to read well down to 80 columns. A pipe or a file
(`make trace | less`, `make traffic > out.txt`, a CI log) gets plain lines instead: no box drawing, no
colour, and nothing cut or wrapped, since rich would otherwise assume 80 columns and cut ids and messages
to fit them. One table row is one line, its columns aligned, so grep and awk see whole records.
"""

from __future__ import annotations

import os
import sys

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

COLUMN_GAP = "  "


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader stopped reading (`make trace | head`): that is not a failure of the command, so no
        exit status 1 for make to report as an error (rich's default), and no traceback either."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())
        raise SystemExit(0)


def make_console(*, stderr: bool = False) -> Console:
    console = _Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        # Text is printed as it is, however long: the reader (a pager, a file, grep) decides how to wrap.
        console.soft_wrap = True
    return console


def print_table(console: Console, table: Table) -> None:
    """The table as rich draws it on a terminal; as plain aligned lines anywhere else."""
    if console.is_terminal:
        console.print(table)
        return
    for line in plain_lines(table):
        console.out(line, highlight=False)


def plain_lines(table: Table) -> list[str]:
    """The title, the header and one line per row: every cell whole, columns separated by two spaces."""
    columns = table.columns
    header = [_plain(column.header) for column in columns]
    cells = [[_plain(cell) for cell in column.cells] for column in columns]
    rows = [list(row) for row in zip(*cells, strict=True)] if cells else []
    widths = [max(map(cell_len, [name, *texts])) for name, texts in zip(header, cells, strict=True)]
    lines = [_plain(table.title)] if table.title else []
    for row in [header, *rows] if table.show_header else rows:
        padded = [
            _pad(text, width, right=column.justify == "right")
            for text, width, column in zip(row, widths, columns, strict=True)
        ]
        lines.append(COLUMN_GAP.join(padded).rstrip())
    return lines


def _pad(text: str, width: int, right: bool) -> str:
    # Padding by terminal cells, not characters: "→" is one cell, an emoji two.
    fill = " " * (width - cell_len(text))
    return fill + text if right else text + fill


def _plain(cell: object) -> str:
    """A cell's text without markup or styles, on one line."""
    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = Text.from_markup(cell).plain
    else:
        text = "" if cell is None else str(cell)
    return COLUMN_GAP.join(text.splitlines())
