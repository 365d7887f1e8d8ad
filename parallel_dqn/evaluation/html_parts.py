"""The HTML pieces of the report: tables with numbers formatted by kind, embedded PNG figures, escaping.

Shared by :mod:`.report` (runs, comparison, walk-forward) and :mod:`.tearsheet_section` (the tear sheet). Every
table sits in a ``<div class="wide">`` that scrolls sideways on its own, so no table can widen the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from parallel_dqn.evaluation import formats


def table(head: Sequence[Any], rows: Iterable[Sequence[Any]], css_id: str | None = None,
          first_row_class: str | None = None, last_column_class: str | None = None,
          kinds: Sequence[str] | None = None) -> str:
    """An HTML table; every cell escaped, each number formatted by its column's kind (:mod:`.formats`: given in
    ``kinds``, else told from the heading: ``Sharpe`` 2 decimals, ``total return`` as a percentage...)."""
    ident = f' id="{escape(css_id)}"' if css_id else ""
    last = f'<td class="{escape(last_column_class)}">' if last_column_class else "<td>"
    column_kinds = list(kinds) if kinds is not None else [formats.kind_of(str(h)) for h in head]
    heads = [f'<th class="{escape(last_column_class)}">' if last_column_class and j == len(head) - 1 else "<th>"
             for j in range(len(head))]
    out = [f'<div class="wide"><table{ident}><tr>' + "".join(f"{t}{escape(h)}</th>" for t, h in zip(heads, head))
           + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{escape(first_row_class)}"' if first_row_class and i == 0 else ""
        cells = [f"{last if j == len(row) - 1 else '<td>'}"
                 f"{cell(v, column_kinds[j] if j < len(column_kinds) else formats.PLAIN)}</td>"
                 for j, v in enumerate(row)]
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table></div>"


def figure(png_bytes: bytes, caption: str, alt: str) -> str:
    """An embedded PNG (base64 data URI) with a caption."""
    data = base64.b64encode(png_bytes).decode("ascii")
    return (f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def cell(value: Any, kind: str = formats.PLAIN) -> str:
    """One table cell's escaped text: ``value`` in the format of ``kind``, a dash for None, JSON for a list."""
    if value is None:
        return "&ndash;"
    if isinstance(value, (list, dict)):
        return escape(json.dumps(value))
    return escape(formats.format_value(value, kind))


def escape(text: Any) -> str:
    """``text`` as HTML text or attribute value."""
    return html.escape(str(text), quote=True)


def png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi), drawn on the Agg canvas."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
