"""Text written into report.md files: what a model wrote stays text, whatever characters it holds."""

from __future__ import annotations

import html


def md_text(s) -> str:
    """HTML special characters escaped (a model's answer can hold `<script>`), line breaks joined into one line."""
    return html.escape(str(s), quote=False).replace("\r\n", "\n").replace("\n", " ")


def md_cell(s) -> str:
    """A markdown table cell: `md_text`, and a pipe cannot end the cell early."""
    return md_text(s).replace("|", "\\|")


def md_row(cells) -> str:
    return "| " + " | ".join(map(md_cell, cells)) + " |"


def md_table(head, rows) -> str:
    return "\n".join([md_row(head), "|" + "---|" * len(head), *map(md_row, rows)])
