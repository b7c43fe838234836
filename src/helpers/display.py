"""How the notebooks show things: figures that display themselves, long answers wrapped in tables, markdown tables.

Display only: nothing here computes a result. A fixed uuid in a styled table and a fixed dpi in a figure keep the
HTML and the PNG the same on every execution, as nbval compares them.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FIGURE_DPI = 100
WRAPPED_TEXT = {"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"}


def shown_figure() -> type[Figure]:
    """A Figure class that displays itself in Jupyter whatever the matplotlib backend (CI sets MPLBACKEND=Agg)."""
    from matplotlib.figure import Figure

    class ShownFigure(Figure):
        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=FIGURE_DPI)
            return buffer.getvalue()

    return ShownFigure


def styled_answers(table: pd.DataFrame, uuid: str):
    """Whole answers, wrapped, left-aligned; a fixed uuid so that the HTML is the same on every run."""
    return (table.style.set_uuid(uuid).hide(axis="index")
            .set_properties(**WRAPPED_TEXT))


def styled_text_table(table: pd.DataFrame, uuid: str):
    """Long texts wrapped and top-aligned; a fixed uuid keeps the HTML identical between executions."""
    return table.style.set_uuid(uuid).set_properties(**WRAPPED_TEXT)


def styled_side_by_side(table: pd.DataFrame, uuid: str = "side_by_side"):
    """Notebook 06's answers side by side (helpers.evaluation.side_by_side)."""
    return styled_text_table(table, uuid=uuid)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table, the index as its first columns."""
    return table.reset_index().to_markdown(index=False) + "\n"
