"""The per-layer HTML report ``RUN/results/<layer>.html``: one self-contained file.

Generated from the results document (pipeline/results.py) plus, for the unit images, the
dataset's images and the run's activation cache (never the network):

- run facts and the summary table (detectors, unique (top), unique (per-cat) per category);
- a bar chart (matplotlib PNG) of unique detectors per category, both conventions side by
  side (the per-category sum, as in the published figures, and the unique top labels), with
  the detector units; title with layer, quantile and IoU threshold;
- every unit sorted by IoU (ties: unit number): rank, unit, label, category, IoU, detector
  flag, p-values when the null model ran, best concept per category, and a strip of its
  top-N images.

Top images of unit k: the N images with the largest per-image maximum ``maxima[:, k]``
(descending; ties by image index). On each, the scored mask M = S > T_k, S the map upsampled
to the segmentation size with :func:`pipeline.upsample.upsample` (the scoring's definition),
is resized to the thumbnail (nearest) and drawn over the image: outside the mask the image
is dimmed, the mask's outline is drawn in yellow. The chosen image indices (0-based rows of
index.csv) are in the strip's ``data-images`` attribute.

Every image is embedded as a base64 ``data:`` URI (charts PNG, strips JPEG), so the page
opens from disk and survives being moved or mailed; nothing else is written. A small inline
script sets ``data-images-loaded="loaded/total"`` on ``<body>`` once the page has loaded
(used by the headless-browser test).

Cost: images are loaded and thumbnailed once per layer and shared between units (many
units share top images); activations are read per group of units for just the chosen
images. Measured on the demo: README, "Output files".
"""
from __future__ import annotations

import base64
import html
import io
import time
from typing import Callable, Sequence

import numpy as np

from pipeline.results import p_columns

DEFAULT_TOP_IMAGES = 8
THUMB = 80                      # thumbnail height in px (width keeps the image's aspect)
GAP = 2                         # px between the images of a strip
DIM = 0.3                       # brightness kept outside the mask
OUTLINE = (255, 221, 0)         # mask outline colour
JPEG_QUALITY = 80


# ---------------------------------------------------------------- the pieces, tested alone
def top_images(maxima: np.ndarray, n: int) -> np.ndarray:
    """(K, min(n, N)) int64: per unit, the images by per-image maximum, descending, ties by
    image index. maxima: (N, K)."""
    mx = np.asarray(maxima, dtype=np.float64)
    order = np.argsort(-mx, axis=0, kind="stable")      # stable: ties by image index
    return np.ascontiguousarray(order[: min(n, mx.shape[0])].T)


def unit_masks(maps: np.ndarray, threshold: float, seg_size: tuple[int, int]) -> np.ndarray:
    """(n, sh, sw) bool: the scored masks S > T of maps (n, h, w) of one unit, S the
    float64 lerp-form bilinear upsampling of pipeline.upsample (exactly as scored)."""
    import torch
    from pipeline.upsample import upsample
    s = upsample(torch.from_numpy(np.ascontiguousarray(maps)), tuple(seg_size))
    return (s > float(threshold)).numpy()


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) nearest-neighbour resize of a 2-D array (pixel centres)."""
    h, w = mask.shape
    H, W = size
    ys = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return mask[ys[:, None], xs[None, :]]


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` dimmed outside ``mask`` (H, W bool), the mask's outline
    (mask pixels with a 4-neighbour outside it or on the border) in OUTLINE."""
    out = image.astype(np.float32)
    out[~mask] *= DIM
    out = out.astype(np.uint8)
    p = np.pad(mask, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    out[mask & ~inner] = OUTLINE
    return out


def thumbnail(image: np.ndarray, height: int = THUMB) -> np.ndarray:
    from PIL import Image
    h, w = image.shape[:2]
    W = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(image).resize((W, height), Image.BILINEAR))


def strip(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Tiles of one height side by side, GAP white pixels apart."""
    h = tiles[0].shape[0]
    gap = np.full((h, GAP, 3), 255, np.uint8)
    parts = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(t)
    return np.concatenate(parts, axis=1)


def data_uri(pixels: np.ndarray | bytes, fmt: str = "JPEG") -> str:
    if isinstance(pixels, bytes):
        raw, mime = pixels, "image/png"
    else:
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG"
                                                  else {}))
        raw, mime = buf.getvalue(), f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


# ----------------------------------------------------------------------- unit strips
def unit_strips(acts, maxima, thresholds: np.ndarray, load_image: Callable[[int], np.ndarray],
                seg_size: tuple[int, int], n: int = DEFAULT_TOP_IMAGES, *,
                progress: bool = False, desc: str = "unit images"
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """(strips, top): per unit an (THUMB, W, 3) uint8 strip of its top-n images with the
    mask drawn, and top (K, n) the image indices shown. acts: (N, K, h, w) array-like
    (zarr), maxima (N, K), thresholds (K,)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny upsamplings: threads only contend (100x slower)
    try:
        return _unit_strips(acts, maxima, thresholds, load_image, seg_size, n,
                            progress=progress, desc=desc)
    finally:
        torch.set_num_threads(threads)


def _unit_strips(acts, maxima, thresholds, load_image, seg_size, n, *, progress, desc):
    from tqdm import tqdm
    mx = np.asarray(maxima[:])
    K = mx.shape[1]
    top = top_images(mx, n)
    thumbs: dict[int, np.ndarray] = {}          # image index -> thumbnail, shared by units
    strips: list[np.ndarray] = [None] * K       # type: ignore[list-item]
    chunks = getattr(acts, "chunks", None)
    group = max(1, min(K, int(chunks[1]) if chunks else 32, 64))
    with tqdm(total=K, unit="unit", desc=desc, disable=not progress,
              dynamic_ncols=True) as bar:
        for g0 in range(0, K, group):
            units = np.arange(g0, min(K, g0 + group))
            imgs = np.unique(top[units].ravel())
            if hasattr(acts, "oindex"):
                block = np.asarray(acts.oindex[imgs, g0:g0 + len(units)])
            else:
                block = np.asarray(acts[imgs][:, g0:g0 + len(units)])
            pos = {int(i): j for j, i in enumerate(imgs)}
            for u in units:
                rows = [pos[int(i)] for i in top[u]]
                masks = unit_masks(block[rows, u - g0], thresholds[u], seg_size)
                tiles = []
                for i, m in zip(top[u], masks):
                    i = int(i)
                    if i not in thumbs:
                        thumbs[i] = thumbnail(load_image(i))
                    t = thumbs[i]
                    tiles.append(overlay(t, resize_nearest(m, t.shape[:2])))
                strips[u] = strip(tiles)
                bar.update(1)
    return strips, top


# ---------------------------------------------------------------------------- chart
def chart_png(summary: dict, title: str = "") -> bytes:
    """PNG bytes: unique detectors per category, per-category sum (the published
    convention) and unique top labels as grouped bars, detector units as outlines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cats = list(summary["categories"])
    x = np.arange(len(cats))
    per = [summary["per_category_sum_per_category"][c] for c in cats]
    topl = [summary["unique_top_labels_per_category"][c] for c in cats]
    det = [summary["detectors_per_category"][c] for c in cats]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    w = 0.38
    b1 = ax.bar(x - w / 2, per, w, color="#3b75af",
                label=f"unique (per-cat sum) = {summary['per_category_sum']}")
    b2 = ax.bar(x + w / 2, topl, w, color="#ef8636",
                label=f"unique (top labels) = {summary['unique_top_labels']}")
    ax.bar(x + w / 2, det, w, fill=False, edgecolor="grey", linestyle="--", linewidth=0.8,
           label=f"detector units = {summary['detectors']}")
    for bars in (b1, b2):
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, cats)
    ax.set_ylabel("unique detectors")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- page
_LOADED_SCRIPT = (
    "<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
    "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
    "document.body.setAttribute('data-images-loaded',ok+'/'+im.length);});</script>")


def render(doc: dict, chart: bytes | None = None, strips: Sequence[np.ndarray] | None = None,
           top: np.ndarray | None = None, note: str = "") -> str:
    """The page (module docstring). strips/top: per unit (unit order) or None (no images;
    ``note`` says why)."""
    s, run = doc["summary"], doc["run"]
    e = html.escape
    cats = s["categories"]
    pcols = p_columns(doc)
    layer = str(run.get("layer"))
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Network Dissection: {e(layer)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td.l,th.l{text-align:left}tr.det{background:#eef6ee}"
        "td.best{font-size:75%;color:#444;text-align:left}img.strip{display:block}</style>"
        "</head><body>",
        f"<h1>Layer {e(layer)}</h1>",
        f"<p>model {e(str(run.get('model', {}).get('spec')))}, dataset "
        f"{e(str(run.get('dataset', {}).get('path')))} "
        f"({run.get('dataset', {}).get('num_images')} images); {s['units']} units; "
        f"quantile {s['quantile']}, IoU &gt; {s['iou_threshold']}; schema "
        f"{e(doc['schema'])} v{doc['schema_version']}, created {e(doc['created'])}</p>",
        "<h2>Detectors</h2><p><b>unique (top)</b>: distinct top labels among detector "
        "units; <b>unique (per-cat)</b>: per category, distinct best-in-category labels of "
        "units whose IoU in that category exceeds the threshold, summed (the published "
        "convention).</p>",
        "<table><tr><th class=l>category</th><th>detectors</th><th>unique (top)</th>"
        "<th>unique (per-cat)</th></tr>"]
    for c in cats:
        out.append(f"<tr><td class=l>{e(c)}</td><td>{s['detectors_per_category'][c]}</td>"
                   f"<td>{s['unique_top_labels_per_category'][c]}</td>"
                   f"<td>{s['per_category_sum_per_category'][c]}</td></tr>")
    out.append(f"<tr><th class=l>total</th><th>{s['detectors']}</th>"
               f"<th>{s['unique_top_labels']}</th><th>{s['per_category_sum']}</th></tr>"
               "</table>")
    if chart is not None:
        out.append(f"<p><img class=chart alt='unique detectors per category' "
                   f"src='{data_uri(chart)}'></p>")
    if doc.get("null"):
        n = doc["null"]
        sig = s.get("significant_detectors", {})
        out.append(f"<p>Null model: {', '.join(n['kinds'])}; {n['permutations']} "
                   f"permutations on {n['images']} images (seed {n['seed']}); detectors "
                   f"with p &le; {sig.get('alpha')}: "
                   + ", ".join(f"{k} {v}" for k, v in sig.items() if k != "alpha")
                   + "</p>")
    out.append("<h2>Units</h2>")
    if strips is not None:
        out.append(f"<p>Top {top.shape[1]} images of each unit by per-image maximum "
                   "activation; outside the unit's mask (upsampled map &gt; T<sub>k</sub>, "
                   "as scored) the image is dimmed, the mask's outline is yellow.</p>")
    elif note:
        out.append(f"<p>{e(note)}</p>")
    out.append("<table><tr><th>rank</th><th>unit</th><th class=l>label</th>"
               "<th class=l>category</th><th>IoU</th><th>detector</th>"
               + "".join(f"<th>{e(p)}</th>" for p in pcols)
               + "<th class=l>best per category</th>"
               + ("<th class=l>top images</th>" if strips is not None else "") + "</tr>")
    order = sorted(doc["units"], key=lambda u: (-u["iou"], u["unit"]))
    for rank, u in enumerate(order, 1):
        cls = " class=det" if u["detector"] else ""
        k = u["unit"] - 1
        best = "<br>".join(f"{e(c)}: {e(u['best'][c]['label'])} {u['best'][c]['iou']:.3f}"
                           for c in cats)
        cell = ""
        if strips is not None:
            idx = ",".join(str(int(i)) for i in top[k])
            cell = (f"<td class=l><img class=strip data-unit='{u['unit']}' "
                    f"data-images='{idx}' alt='unit {u['unit']}' "
                    f"src='{data_uri(strips[k])}'></td>")
        out.append(f"<tr{cls}><td>{rank}</td><td>{u['unit']}</td>"
                   f"<td class=l>{e(u['label'])}</td><td class=l>{e(u['category'])}</td>"
                   f"<td>{u['iou']:.4f}</td><td>{'yes' if u['detector'] else ''}</td>"
                   + "".join(f"<td>{u[p]:.3g}</td>" for p in pcols)
                   + f"<td class=best>{best}</td>{cell}</tr>")
    out.append("</table>" + _LOADED_SCRIPT + "</body></html>\n")
    return "\n".join(out)


def layer_report(doc: dict, run=None, layer: str | None = None, dataset=None,
                 top_n: int = DEFAULT_TOP_IMAGES, *, progress: bool = False,
                 log=print) -> str:
    """The page of one scored layer. ``run``/``dataset`` (a BrodenDataset, a path, or None
    for the path the run recorded) give the unit images; ``top_n`` 0 or no readable dataset
    gives the page without them (``log`` says why)."""
    s = doc["summary"]
    title = (f"{doc['run'].get('layer')}: unique detectors per category (quantile "
             f"{s['quantile']}, IoU > {s['iou_threshold']})")
    chart = chart_png(s, title)
    if top_n <= 0 or run is None:
        return render(doc, chart, note="" if top_n <= 0 else "no run: no unit images")
    from cache import store
    from pipeline.broden import BrodenDataset, BrodenError
    try:
        if not isinstance(dataset, BrodenDataset):
            dataset = BrodenDataset(dataset or store.read_run_attrs(run)["dataset"]["path"])
        seg = dataset.segmentation_size()
        want = doc["run"].get("dataset", {}).get("fingerprint")
        if want and dataset.fingerprint() != want:
            raise BrodenError(f"{dataset.directory} is not the dataset the run was "
                              f"extracted from (fingerprint differs)")
    except (BrodenError, OSError) as ex:
        note = f"unit images left out: the dataset could not be read ({ex}); pass --dataset"
        log(f"[{layer}] {note}")
        return render(doc, chart, note=note)
    t0 = time.perf_counter()
    strips, top = unit_strips(store.activations(run, layer), store.maxima(run, layer),
                              np.asarray(doc["thresholds"]["T"], dtype=np.float64),
                              dataset.load_image, seg, top_n, progress=progress,
                              desc=f"images {layer}")
    page = render(doc, chart, strips, top)
    log(f"[{layer}] HTML report with top-{top.shape[1]} images of {len(strips)} units: "
        f"{time.perf_counter() - t0:.1f} s, {len(page) / 1e6:.1f} MB")
    return page
