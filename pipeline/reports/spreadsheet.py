"""CSV cells a spreadsheet would execute, made inert for the CSVs people open.

Excel, LibreOffice and Google Sheets run a cell whose text starts with ``=``, ``+``, ``-``
or ``@`` (and, after a tab or carriage return, the same) as a formula: a label or category
name such as ``=HYPERLINK(...)`` from a downloaded dataset would run when a sweep,
rotation or comparison CSV is opened. :func:`inert_table` prefixes such text cells with an
apostrophe (OWASP's advice for CSV injection), which every spreadsheet shows as text and
hides; numbers (Python numbers and text that reads as a number, e.g. ``-0.5``) are left
alone. The NetDissect CSV ``results/<layer>.csv`` is a data file that scripts read and
is written exactly (:func:`formula_cells` finds what a scoring announces instead).
"""
from __future__ import annotations

from typing import Iterable, Sequence

#: First characters that make a spreadsheet read a text cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_formula(cell) -> bool:
    if not isinstance(cell, str) or not cell.startswith(FORMULA_STARTS):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False                                  # "-0.5", "+3": a number, not a formula


def inert(cell):
    """``cell`` as a spreadsheet shows it as text: ``'`` + cell for a text cell that would
    run as a formula, anything else unchanged."""
    return "'" + cell if _is_formula(cell) else cell


def inert_table(header: Sequence, rows: Iterable[Sequence]) -> tuple[list, list[list]]:
    """(header, rows) with every cell passed through :func:`inert`."""
    return [inert(c) for c in header], [[inert(c) for c in row] for row in rows]


def formula_cells(header: Sequence, rows: Iterable[Sequence]) -> list[str]:
    """The distinct cells of (header, rows) a spreadsheet would run, in order of first
    appearance."""
    seen: dict[str, None] = {}
    for row in [header, *rows]:
        for c in row:
            if _is_formula(c):
                seen.setdefault(c)
    return list(seen)
