"""Plain-text and markdown tables for reports and command output."""

from __future__ import annotations

from typing import Any, Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """``rows`` under ``header``: a markdown table, or aligned columns (the first left-aligned)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows])
    widths = [max(len(str(r[i])) for r in [list(header)] + list(rows)) for i in range(len(header))]

    def line(row: Sequence[Any]) -> str:
        return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                         for i, (v, w) in enumerate(zip(row, widths)))
    return "\n".join([line(header)] + [line(r) for r in rows])
