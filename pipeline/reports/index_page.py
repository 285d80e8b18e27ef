"""The index page of a run's results: ``results/index.html``, one row per scored layer and
scoring (the default one in ``results/``, named ones in ``results/<name>/``), with its
settings (quantile, IoU threshold, categories, null model), its headline numbers
(detectors, unique concepts of the detectors' top labels, the per-category sum) and links
to its HTML pages and CSV (and the formula tables of ``netdissect compositional`` and the
concept vectors' table and chart at the same quantile). Rebuilt from the results documents on disk after every scoring,
so it lists what is there (a scoring removed by hand disappears from it). Self-contained,
no script.
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from urllib.parse import quote

from pipeline.files import write_text
from pipeline.reports.document import SCHEMA as RESULTS_SCHEMA

INDEX_NAME = "index.html"


def scored_documents(results: Path) -> list[tuple[str, Path, dict]]:
    """(scoring name, "" for the default; the results document's path; the document) of
    every results document under ``results`` and its scoring folders, default scoring
    first, then by name; layers in the run's order when the document records it."""
    found = []
    for folder in [results] + sorted(p for p in results.iterdir() if p.is_dir()):
        scoring = "" if folder == results else folder.name
        for path in sorted(folder.glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue                      # not a results document (or being written)
            if isinstance(doc, dict) and doc.get("schema") == RESULTS_SCHEMA:
                found.append((scoring, path, doc))
    return found


def _pages(folder: Path, stem: str) -> list[str]:
    """The HTML pages of one layer's scoring: <stem>.html and <stem>.topN.html."""
    return sorted(p.name for p in folder.glob(f"{stem}*.html")
                  if p.name == f"{stem}.html" or (p.name[len(stem):].startswith(".top")
                                                  and p.name.count(".") == stem.count(".") + 2))


def render_index(results: Path, run_facts: dict | None = None) -> str:
    """The index page (module docstring) of the results folder ``results``."""
    e = html.escape
    docs = scored_documents(results)
    run = run_facts or (docs[0][2].get("run", {}) if docs else {})
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
           f"<title>Network Dissection: {e(str(run.get('path', results.parent)))}</title>",
           "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
           "td.l,th.l{text-align:left}</style></head><body>",
           f"<h1>Run {e(str(run.get('path', results.parent)))}</h1>",
           f"<p>model {e(str((run.get('model') or {}).get('spec')))}, dataset "
           f"{e(str((run.get('dataset') or {}).get('path')))}</p>"]
    if not docs:
        out.append("<p>No scoring yet: run <code>netdissect score RUN</code>.</p>")
    else:
        out.append("<table><tr><th class=l>scoring</th><th class=l>layer</th>"
                   "<th>quantile</th><th>IoU &gt;</th><th class=l>categories</th>"
                   "<th>null</th><th>units</th><th>detectors</th>"
                   "<th>unique concepts</th><th>per-category sum</th>"
                   "<th class=l>pages</th></tr>")
        for scoring, path, doc in docs:
            s, cfg = doc["summary"], doc.get("config") or {}
            cats = cfg.get("categories") or s.get("categories") or []
            every = cfg.get("all_categories") or cats
            cat_text = "all" if list(cats) == list(every) else ", ".join(map(str, cats))
            rel = "" if not scoring else quote(scoring) + "/"
            links = [f"<a href='{rel}{quote(p)}'>{e(p)}</a>"
                     for p in _pages(path.parent, path.stem)]
            links.append(f"<a href='{rel}{quote(path.stem)}.csv'>{e(path.stem)}.csv</a>")
            links += [f"<a href='{rel}{quote(f.name)}'>{e(f.name)}</a>"    # the analyses
                      for pattern in (f"{path.stem}.formulas*.csv",
                                      f"{path.stem}.concept_vectors.csv",
                                      f"{path.stem}.concept_vectors.png")
                      for f in sorted(path.parent.glob(pattern))]
            out.append(
                f"<tr><td class=l>{e(scoring or '(default)')}</td>"
                f"<td class=l>{e(str(s.get('layer', path.stem)))}</td>"
                f"<td>{e(str(s.get('quantile')))}</td><td>{e(str(s.get('iou_threshold')))}</td>"
                f"<td class=l>{e(cat_text)}</td><td>{'yes' if doc.get('null') else ''}</td>"
                f"<td>{e(str(s.get('units')))}</td><td>{e(str(s.get('detectors')))}</td>"
                f"<td>{e(str(s.get('unique_top_labels')))}</td>"
                f"<td>{e(str(s.get('per_category_sum')))}</td>"
                f"<td class=l>{' '.join(links)}</td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def write_index(results: Path | str) -> Path | str:
    """Write ``results/index.html`` (atomically) and return its path. Results at an
    fsspec URL (a run on object storage): the page is rendered from a local copy of
    their results documents (the HTML pages only by name) and uploaded."""
    if isinstance(results, Path):
        return write_text(results / INDEX_NAME, render_index(results))
    import fsspec
    from cache.store import remove_stale_dirs, temp_dir
    fs, root = fsspec.core.url_to_fs(results)
    root = root.rstrip("/")
    remove_stale_dirs(INDEX_STAGING)
    tmp = temp_dir(INDEX_STAGING)
    try:
        for path in fs.find(root, maxdepth=2):
            rel = path[len(root) + 1:]
            if rel.endswith((".json", ".html")) and rel != INDEX_NAME:
                local = Path(tmp, rel)
                local.parent.mkdir(parents=True, exist_ok=True)
                if rel.endswith(".json"):
                    fs.get_file(path, str(local))
                else:
                    local.touch()
        text = render_index(Path(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fs.pipe_file(f"{root}/{INDEX_NAME}", text.encode("utf-8"))
    return f"{results.rstrip('/')}/{INDEX_NAME}"


INDEX_STAGING = "netdissect-index-"
