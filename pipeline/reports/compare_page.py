"""The comparison page ``DIR/comparison.html`` (compare --out DIR): the sources' settings
(with the warnings when they differ), the comparison chart and the side-by-side table of
detectors (det), unique top labels (top) and the per-category sum (per-cat) per category
and source; '-' where a source does not score a category. Self-contained (the chart is a
data URI), names escaped, no script.
"""
from __future__ import annotations

import html
from typing import Sequence

from pipeline.reports.images import data_uri
from pipeline.reports.netdissect_csv import ResultTable
from pipeline.reports.page_script import STYLE
from pipeline.reports.tables import category_order, comparison_counts


def render_comparison(tables: Sequence[ResultTable], summaries: Sequence[dict],
                      settings: Sequence[str], chart_png: bytes) -> str:
    e = html.escape
    thr = summaries[0]["iou_threshold"] if summaries else 0.04
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
           "<title>Network Dissection: comparison</title>",
           f"<style>{STYLE}</style></head><body>",
           f"<h1>Comparison at IoU &gt; {e(format(thr, 'g'))}</h1>", "<ul>"]
    for line in settings[1:]:
        if line.startswith("warning:"):
            out.append(f"</ul><p class=warn><b>Warning</b>: {e(line[len('warning: '):])}</p><ul>")
        else:
            out.append(f"<li>{e(line.strip())}</li>")
    out.append("</ul>")
    out.append(f"<p><img class=chart alt='unique detectors per category' "
               f"src='{data_uri(chart_png)}'></p>")
    out.append("<div class=wide><table><tr><th class=l rowspan=2>category</th>"
               + "".join(f"<th colspan=3>{e(t.name)}</th>" for t in tables) + "</tr><tr>"
               + "".join("<th>det</th><th>top</th><th>per-cat</th>" for _ in tables)
               + "</tr><tr><td class=l>units</td>"
               + "".join(f"<td colspan=3>{e(str(s['units']))}</td>" for s in summaries)
               + "</tr>")
    for c in category_order(tables) + [None]:
        cells = []
        for s in summaries:
            vals = comparison_counts(s, c) or ["-"] * 3
            cells += [f"<td>{e(str(v))}</td>" for v in vals]
        name = "<b>total</b>" if c is None else e(c)
        out.append(f"<tr><td class=l>{name}</td>{''.join(cells)}</tr>")
    out.append("</table></div></body></html>\n")
    return "\n".join(out)
