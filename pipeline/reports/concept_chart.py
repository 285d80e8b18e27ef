"""What a layer detects, concept by concept: the counts behind the page's concept chart and
its HTML (bars of plain ``<a>``/``<span>`` elements: no script, no image, each bar a link
to the concept's row in the page's concept table).

For concept c of category g, from the results document's units (pipeline/reports/document.py):

- top: the detector units whose top label is c (the "unique (top)" convention counts the
  concepts with at least one);
- per-cat: the units whose best concept in category g is c with IoU above the scoring's
  threshold (the "unique (per-cat)" convention, the published one, counts those).

Concepts are grouped by category (the document's category order), within a category by
top count, then per-cat count (descending), then name.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

# one colour per category position (matplotlib's tab10), cycled
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
BAR_PX = 120            # height of the tallest bar


@dataclass
class ConceptUnits:
    """One concept's units (1-based unit numbers, as on the page)."""
    category: str
    label: str
    top: list[int] = field(default_factory=list)
    per_cat: list[int] = field(default_factory=list)


def concept_units(doc: dict) -> list[ConceptUnits]:
    """Every concept with a unit under either convention (module docstring)."""
    thr = float(doc["summary"]["iou_threshold"])
    cats = list(doc["summary"]["categories"])
    found: dict[tuple[str, str], ConceptUnits] = {}

    def entry(cat: str, label: str) -> ConceptUnits:
        return found.setdefault((cat, label), ConceptUnits(cat, label))
    for u in doc["units"]:
        if u["detector"] and u["category"] in cats:
            entry(u["category"], u["label"]).top.append(int(u["unit"]))
        for c in cats:
            b = u["best"].get(c)
            if b and float(b["iou"]) > thr:
                entry(c, b["label"]).per_cat.append(int(u["unit"]))
    return sorted(found.values(), key=lambda x: (cats.index(x.category), -len(x.top),
                                                 -len(x.per_cat), x.label))


def category_colours(categories) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}


def chart_html(concepts: list[ConceptUnits], categories) -> str:
    """The concept chart: per category a group of bars, one per concept: solid = detector
    units with it as top label, light = units with it as best-in-category above the
    threshold; the number of top units over the bar; each bar links to ``#concept-<i>``
    (i: the concept's position in ``concepts``)."""
    e = html.escape
    if not concepts:
        return "<p>No unit detects a concept at this threshold.</p>"
    colour = category_colours(categories)
    most = max(max(len(c.top), len(c.per_cat)) for c in concepts) or 1
    out = ["<div class=cchart>"]
    for cat in categories:
        group = [(i, c) for i, c in enumerate(concepts) if c.category == cat]
        if not group:
            continue
        out.append(f"<div class=cgroup style='--c:{colour[cat]}'><div class=cbars>")
        for i, c in group:
            h1 = round(BAR_PX * len(c.top) / most)
            h2 = round(BAR_PX * len(c.per_cat) / most)
            tip = (f"{c.label} ({cat}): {len(c.top)} detector unit(s) with it as top label; "
                   f"{len(c.per_cat)} unit(s) with it as best {cat} concept")
            out.append(f"<a class=cbar href='#concept-{i}' title='{e(tip)}' "
                       f"data-concept='{i}'><span class=n>{len(c.top) or ''}</span>"
                       f"<span class=bars><span class=b1 style='height:{h1}px'></span>"
                       f"<span class=b2 style='height:{h2}px'></span></span>"
                       f"<span class=lab>{e(c.label)}</span></a>")
        n_top = sum(1 for _, c in group if c.top)
        n_cat = sum(1 for _, c in group if c.per_cat)
        out.append(f"</div><div class=cname>{e(cat)}: {n_top} (top), {n_cat} (per-cat)"
                   f"</div></div>")
    out.append("</div>")
    return "".join(out)


def table_html(concepts: list[ConceptUnits]) -> str:
    """The concept table: one row per concept (anchor ``concept-<i>``), its units as links
    to their rows (``#unit-<n>``) and a link that shows only them in the units table
    (``?concept=<i>#units``, applied by the page's script)."""
    e = html.escape

    def links(units: list[int]) -> str:
        return " ".join(f"<a href='#unit-{u}'>{u}</a>" for u in units)
    out = ["<table class=concepts><tr><th class=l>concept</th><th class=l>category</th>"
           "<th>top</th><th class=l>detector units (top label)</th><th>per-cat</th>"
           "<th class=l>units (best in category)</th><th class=l></th></tr>"]
    for i, c in enumerate(concepts):
        both = sorted(set(c.top) | set(c.per_cat))
        out.append(f"<tr id='concept-{i}' data-units='{','.join(map(str, both))}'>"
                   f"<td class=l>{e(c.label)}</td><td class=l>{e(c.category)}</td>"
                   f"<td>{len(c.top)}</td><td class=l>{links(c.top)}</td>"
                   f"<td>{len(c.per_cat)}</td><td class=l>{links(c.per_cat)}</td>"
                   f"<td class=l><a href='?concept={i}#units'>show their images</a></td></tr>")
    out.append("</table>")
    return "".join(out)
