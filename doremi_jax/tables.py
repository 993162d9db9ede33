"""Every table the package prints or writes: aligned terminal text or markdown, one
cell-formatting rule (integers with thousands separators), first column left-aligned."""
from __future__ import annotations

from typing import Sequence

Rows = Sequence[Sequence[object]]


def _cell(value: object) -> str:
  return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def text(header: Sequence[object], rows: Rows) -> str:
  """Columns padded to their widest cell, a dashed rule under the header."""
  cells = [[_cell(c) for c in header]] + [[_cell(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

  def line(row: Sequence[str]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()

  return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                   + [line(r) for r in cells[1:]])


def markdown_lines(header: Sequence[object], rows: Rows) -> list[str]:
  """A markdown table as lines; numeric columns (all but the first) right-aligned."""
  return (["| " + " | ".join(map(_cell, header)) + " |",
           "|---|" + "---:|" * (len(header) - 1)]
          + ["| " + " | ".join(map(_cell, r)) + " |" for r in rows])


def markdown(header: Sequence[object], rows: Rows) -> str:
  return "\n".join(markdown_lines(header, rows)) + "\n"
