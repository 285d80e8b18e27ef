"""Synthetic Broden generator: catalogue, determinism, on-disk format read back by
pipeline.broden, ground truth, colour labels, learnability of scenes."""
from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.synthetic.canvas import _PAINT
from pipeline.synthetic.catalogue import (CATEGORIES, COLORS, CONCEPTS, LABELS, SCENES,
                                          SOURCES)
from pipeline.synthetic.colors import color_labels, downsample_rgb, name_colors, srgb_to_lab
from pipeline.synthetic.render import (_SOURCE_BLOCK, SyntheticImage, image_source,
                                       image_split, render_image)
from pipeline.synthetic.writer import write_dataset
from pipeline.synthetic.broden_catalogue import (CATEGORY_SIZES, NUM_LABELS, SOURCE_CATEGORIES,
                                                 SOURCE_IMAGES, broden_catalogue)
from pipeline.synthetic.broden_render import render_broden_image
from pipeline.synthetic.broden_sources import SOURCES as BRODEN_SOURCES
from pipeline.synthetic.broden_sources import image_sources, source_counts
from pipeline.broden import BrodenDataset
from pipeline.label_decoding import build_label_cache

N, IMG, SEG, SEED = 80, 48, 24, 3


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("syn") / "broden"
    return write_dataset(d, num_images=N, image_size=IMG, seg_size=SEG, seed=SEED,
                         workers=1, progress=False)


@pytest.fixture(scope="module")
def ds(gen) -> BrodenDataset:
    return BrodenDataset(gen)


@pytest.fixture(scope="module")
def truth() -> list[SyntheticImage]:
    return [render_image(i, SEED, IMG, SEG) for i in range(N)]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- catalogue

def test_catalogue_numbering_and_groups():
    nums = [c.number for c in CONCEPTS]
    assert nums == list(range(1, len(CONCEPTS) + 1))
    assert len({c.name for c in CONCEPTS}) == len(CONCEPTS)
    # numbers grouped by primary category in category order
    order = [CATEGORIES.index(c.category) for c in CONCEPTS]
    assert order == sorted(order) and set(order) == set(range(6))
    assert CATEGORIES == ("color", "object", "part", "material", "scene", "texture")
    assert [LABELS[n] for n in COLORS] == list(range(1, 12))
    assert COLORS[0] == "black-c" and COLORS[-1] == "yellow-c"
    assert 8 <= len(SCENES) <= 12 and all(LABELS[s] for s in SCENES)
    multi = [c for c in CONCEPTS if c.also]
    assert {c.name for c in multi} >= {"door", "grass"}
    assert CONCEPTS[LABELS["door"] - 1].categories == ("object", "part")
    assert CONCEPTS[LABELS["grass"] - 1].categories == ("object", "material")


# ----------------------------------------------------------------------------- determinism

def test_same_output_for_any_worker_count_and_rerun(gen, tmp_path):
    ref = _files(gen)
    other = write_dataset(tmp_path / "w2", num_images=N, image_size=IMG, seg_size=SEG,
                          seed=SEED, workers=2, progress=False)
    assert _files(other) == ref
    # rerun into an existing, damaged directory overwrites every file
    (other / "index.csv").write_text("garbage\n")
    victim = next((other / "images" / "scenes").glob("*_object.png"))
    victim.write_bytes(b"not a png")
    write_dataset(other, num_images=N, image_size=IMG, seg_size=SEG, seed=SEED, workers=3,
                  progress=False)
    assert _files(other) == ref


def test_different_seed_gives_different_images(gen, tmp_path):
    other = write_dataset(tmp_path / "s", num_images=20, image_size=IMG, seg_size=SEG,
                          seed=SEED + 1, workers=1, progress=False)
    a = _read(gen / "index.csv")[:20]
    b = _read(other / "index.csv")
    assert len(b) == 20 and a != b
    assert all((gen / "images" / x["image"]).read_bytes() !=
               (other / "images" / y["image"]).read_bytes() for x, y in zip(a, b))


def test_render_depends_on_index_and_seed_only():
    a = render_image(7, 5, IMG, SEG)
    render_image(3, 5, IMG, SEG)
    b = render_image(7, 5, IMG, SEG)
    assert np.array_equal(a.image, b.image)
    assert all(np.array_equal(x, y) for c in CATEGORIES
               for x, y in zip(a.planes[c], b.planes[c]))


# ----------------------------------------------------------------------------- format

def test_csv_headers_and_category_rows(gen):
    def header(name):
        return (gen / name).read_text().splitlines()[0]
    assert header("category.csv") == "name,first,last,count,frequency"
    assert header("label.csv") == "number,name,category,frequency,coverage,syns"
    assert header("index.csv") == "image,split,ih,iw,sh,sw," + ",".join(CATEGORIES)
    for c in CATEGORIES:
        assert header(f"c_{c}.csv") == "code,number,name,frequency,coverage"
    assert [r["name"] for r in _read(gen / "category.csv")] == list(CATEGORIES)
    labels = _read(gen / "label.csv")
    assert [int(r["number"]) for r in labels] == list(range(1, len(CONCEPTS) + 1))
    assert [r["name"] for r in labels] == [c.name for c in CONCEPTS]


def test_segmentation_png_encoding(gen, ds, truth):
    i = next(k for k, g in enumerate(truth) if g.source == "scenes")
    name = ds.rows[i].cells["object"][0]
    im = Image.open(gen / "images" / name)
    assert im.mode == "RGB" and im.size == (SEG, SEG)
    a = np.asarray(im).astype(np.int32)
    assert (a[:, :, 2] == 0).all()
    assert np.array_equal(a[:, :, 0] + 256 * a[:, :, 1], truth[i].planes["object"][0])
    jpg = Image.open(gen / "images" / ds.rows[i].image)
    assert jpg.format == "JPEG" and jpg.size == (IMG, IMG)


def test_reader_matches_ground_truth(ds, truth):
    assert len(ds) == N
    assert ds.image_size() == (IMG, IMG) and ds.segmentation_size() == (SEG, SEG)
    for i, g in enumerate(truth):
        row = ds.rows[i]
        assert row.image.startswith(f"{g.source}/") and row.split == g.split
        lab = ds.load_labels(i)
        want_planes = [p for c in CATEGORIES for p in g.planes[c]]
        want_pcats = [c for c in CATEGORIES for _ in g.planes[c]]
        assert lab.plane_categories == want_pcats, f"row {i}"
        assert len(lab.planes) == len(want_planes)
        for got, want in zip(lab.planes, want_planes):
            assert got.dtype == np.int32 and np.array_equal(got, want), f"row {i}"
        assert lab.scalars.tolist() == [v for c in CATEGORIES for v in g.scalars[c]]
        assert lab.scalar_categories == [c for c in CATEGORIES for _ in g.scalars[c]]
        img = ds.load_image(i).astype(np.int16)
        assert np.abs(img - g.image).mean() < 4, f"row {i}: JPEG far from the rendering"


def test_categories_follow_the_source(ds, truth):
    sources = Counter(g.source for g in truth)
    assert set(sources) == set(SOURCES)
    for i, g in enumerate(truth):
        have = {c for c, cell in ds.rows[i].cells.items() if cell}
        assert have == set(SOURCES[g.source]) == set(g.categories), f"row {i}"
        # primary-category presence as the scorer sees it
        present = {ds.all_categories[k] for k in np.flatnonzero(
            ds.categories_present(ds.load_labels(i)))}
        assert present <= set(SOURCES[g.source])
        assert "color" in present
        if g.source == "scenes":
            assert {"object", "scene", "material"} <= present
            assert g.scene in SCENES and ds.rows[i].cells["scene"] == (LABELS[g.scene],)
        if g.source == "textures":
            assert ds.rows[i].cells["texture"] == (LABELS[g.texture],)
    lacking = [i for i in range(N) if not all(ds.rows[i].cells.values())]
    assert len(lacking) == N          # no source carries all six categories, like Broden
    assert all(c in {ds.all_categories[k] for k in ds.primary_category[1:]}
               for c in CATEGORIES)


def test_primary_categories_and_multi_category_labels(gen, ds):
    for c in CONCEPTS:
        assert ds.all_categories[ds.primary_category[c.number]] == c.category, c.name
        assert ds.label_names[c.number] == c.name
    cmaps = {c: {int(r["number"]): r for r in _read(gen / f"c_{c}.csv")} for c in CATEGORIES}
    # door: an object that also occurs as a cabinet part; grass: a material that is also
    # an object in scene images. Both really occur in both categories here.
    for name, cats in (("door", ("object", "part")), ("grass", ("object", "material"))):
        n = LABELS[name]
        for c in cats:
            assert int(cmaps[c][n]["frequency"]) > 0, (name, c)
        lab = {r["name"]: r for r in _read(gen / "label.csv")}[name]
        assert lab["category"].count(";") == 1
    n = LABELS["door"]
    assert float(cmaps["object"][n]["coverage"]) > float(cmaps["part"][n]["coverage"]) > 0
    n = LABELS["grass"]
    assert float(cmaps["material"][n]["coverage"]) > float(cmaps["object"][n]["coverage"]) > 0
    # the reader's code maps hold the category-local codes
    for c in CATEGORIES:
        assert ds.category_codes[c][1:].tolist() == [int(r["number"]) for r in cmaps[c].values()]


def test_statistics_match_decoded_labels(gen, ds):
    """frequency/coverage in c_*.csv, label.csv and category.csv recomputed from the files."""
    _check_tables(gen, ds, CONCEPTS, SEG)


def _check_tables(gen: Path, ds: BrodenDataset, concepts, SEG: int) -> None:
    """c_*.csv, label.csv and category.csv of ``gen`` agree with its decoded labels."""
    G = len(CATEGORIES)
    freq = np.zeros((G, len(concepts) + 1), np.int64)
    pix = np.zeros_like(freq)
    cat_freq = np.zeros(G, np.int64)
    for i in range(len(ds)):
        lab = ds.load_labels(i)
        for g, c in enumerate(CATEGORIES):
            planes = [p for p, pc in zip(lab.planes, lab.plane_categories) if pc == c]
            scal = [v for v, sc in zip(lab.scalars, lab.scalar_categories) if sc == c]
            if not planes and not scal:
                continue
            cat_freq[g] += 1
            for v in set(scal):
                freq[g, v] += 1
                pix[g, v] += SEG * SEG
            if planes:
                st = np.stack(planes)
                for v in np.unique(st[st != 0]):
                    freq[g, v] += 1
                    pix[g, v] += int((st == v).any(axis=0).sum())
    for g, c in enumerate(CATEGORIES):
        rows = _read(gen / f"c_{c}.csv")
        assert [int(r["code"]) for r in rows] == list(range(1, len(rows) + 1))
        for r in rows:
            n = int(r["number"])
            assert int(r["frequency"]) == freq[g, n], (c, r["name"])
            assert float(r["coverage"]) == pix[g, n] / (SEG * SEG), (c, r["name"])
    for g, r in enumerate(_read(gen / "category.csv")):
        assert int(r["frequency"]) == cat_freq[g]
    for r in _read(gen / "label.csv"):
        n = int(r["number"])
        parts = dict(p[:-1].split("(") for p in r["category"].split(";"))
        assert {k: int(v) for k, v in parts.items()} == {
            c: int(freq[g, n]) for g, c in enumerate(CATEGORIES) if c in parts}
        assert concepts[n - 1].category in parts
        assert int(r["frequency"]) == sum(int(v) for v in parts.values())


def test_several_pngs_in_a_part_cell(ds, truth):
    multi = [i for i in range(N) if len(ds.rows[i].cells["part"]) >= 2]
    assert multi, "no image with two part planes"
    for i in multi:
        p1, p2 = truth[i].planes["part"][:2]
        hair = p2 == LABELS["hair"]
        assert hair.any() and set(np.unique(p2)) <= {0, LABELS["hair"]}
        # parts of parts: hair lies on the head (up to sampling, the head covers it)
        assert (p1[hair] == LABELS["head"]).mean() > 0.9


def test_split_is_deterministic_and_mostly_train():
    splits = [image_split(i, 0) for i in range(2000)]
    assert set(splits) == {"train", "val"}
    assert 0.07 < splits.count("val") / 2000 < 0.13
    assert splits == [image_split(i, 0) for i in range(2000)]


def test_sources_balanced_in_every_block():
    for block in range(5):
        src = [image_source(block * 20 + k, 9) for k in range(20)]
        assert Counter(src) == Counter(_SOURCE_BLOCK)


# ----------------------------------------------------------------------------- geometry

def test_geometry_is_resolution_independent():
    """Labels are the same shapes at every resolution (segmentation aligned with image)."""
    for i in range(12):
        lo = render_image(i, 1, 64, 32)
        hi = render_image(i, 1, 128, 32)
        assert lo.source == hi.source
        for c in ("object", "material"):
            for a, b in zip(lo.planes[c], hi.planes[c]):
                assert (a == b).mean() > 0.9, (i, c)


def test_other_resolutions_and_aspect_ratios():
    g = render_image(4, 0, 227, 113)
    assert g.image.shape == (227, 227, 3) and g.image.dtype == np.uint8
    for c in CATEGORIES:
        assert all(p.shape == (113, 113) and p.dtype == np.int32 for p in g.planes[c])
    for i in range(20):
        g = render_image(i, 0, (40, 56), (20, 28))
        assert g.image.shape == (40, 56, 3)
        assert all(p.shape == (20, 28) for c in CATEGORIES for p in g.planes[c])
        assert set(g.categories) == set(SOURCES[g.source])


def test_label_planes_agree_with_pixels(truth):
    """Where a region's label is uniform in a 3x3 neighbourhood, the pixels have its colour."""
    want = {"sky": {"blue-c", "white-c", "grey-c", "orange-c", "pink-c", "purple-c", "brown-c"},
            "grass": {"green-c", "black-c"}, "water": {"blue-c", "green-c"}}
    hits = Counter()
    for g in truth:
        if g.source != "scenes":
            continue
        obj = g.planes["object"][0]
        col = g.planes["color"][0]
        inner = np.ones_like(obj, dtype=bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                inner &= obj == np.roll(np.roll(obj, dy, 0), dx, 1)
        inner[[0, -1], :] = inner[:, [0, -1]] = False
        for name, ok in want.items():
            m = inner & (obj == LABELS[name]) & (col != 0)
            if m.sum() < 5:
                continue
            good = np.isin(col[m], [LABELS[c] for c in ok]).mean()
            assert good > 0.8, (g.index, name, good)
            hits[name] += 1
    assert hits["sky"] > 0 and hits["grass"] + hits["water"] > 0


# ----------------------------------------------------------------------------- colour

def test_color_plane_is_named_from_rendered_pixels(truth):
    for g in truth[:20]:
        small = downsample_rgb(g.image, SEG, SEG)
        assert np.array_equal(g.planes["color"][0], color_labels(small))


def test_color_names_agree_with_rgb():
    q = np.arange(4, 256, 8)
    rgb = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3).astype(np.uint8)
    lab = color_labels(rgb[:, None, :])[:, 0]
    r, g, b = (rgb[:, k].astype(int) for k in range(3))
    mx, mn = rgb.max(1).astype(int), rgb.min(1).astype(int)
    cie = srgb_to_lab(rgb.astype(float))
    light, chroma = cie[:, 0], np.hypot(cie[:, 1], cie[:, 2])
    L = LABELS
    checks = {
        "red-c": (r > g + 40) & (r > b + 40),
        "green-c": (g > r) & (g > b),
        "blue-c": (b > r) & (b >= g),
        "yellow-c": (r > b + 40) & (g > b + 40),
        "orange-c": (r > g) & (g > b),
        "white-c": (mn > 140) & (light > 75) & (chroma < 35),
        "black-c": (mx < 100) & (light < 30) & (chroma < 35),
        "grey-c": (light > 25) & (light < 85) & (chroma < 32),
        "purple-c": (b > g) & (r > g),
        "pink-c": (r > g) & (r >= b),
        "brown-c": (r > b) & (r >= g) & (light < 80),
    }
    for name, rule in checks.items():
        sel = lab == L[name]
        assert sel.sum() > 50, name
        assert rule[sel].mean() > 0.97, (name, rule[sel].mean())
    assert 0 < (lab == 0).mean() < 0.15
    # prototypes of the paint palette name themselves
    for name, variants in _PAINT.items():
        for v in variants:
            got = color_labels(np.array([[v]], np.uint8))[0, 0]
            assert got == L[f"{name}-c"], (name, v, got)
    # the 5-bit lookup agrees with exact naming on most colours
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    exact = name_colors(px.astype(float))
    assert (color_labels(px[:, None, :])[:, 0] == exact).mean() > 0.9


def test_all_colors_appear(ds, truth):
    seen = set()
    for g in truth:
        seen.update(np.unique(g.planes["color"][0]).tolist())
    assert {LABELS[c] for c in COLORS} <= seen


# ----------------------------------------------------------------------------- learnability

def test_scenes_are_distinguishable_by_a_simple_classifier():
    """Nearest class mean on 4x4 colour thumbnails: far above chance (10%) on held-out images."""
    feats, ys = [], []
    i = 0
    while len(ys) < 400:
        if image_source(i, 11) == "scenes":
            g = render_image(i, 11, 32, 16)
            feats.append(downsample_rgb(g.image, 4, 4).astype(np.float32).ravel() / 255)
            ys.append(SCENES.index(g.scene))
        i += 1
    X, y = np.array(feats), np.array(ys)
    tr, te = slice(0, 300), slice(300, 400)
    means = np.stack([X[tr][y[tr] == k].mean(0) for k in range(len(SCENES))])
    pred = np.argmin(((X[te][:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == y[te]).mean() > 0.35


# ----------------------------------------------------------------------------- CLI + errors

def _cli():
    """scripts/make_synthetic_broden.py loaded by its path."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_broden.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_broden", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("profile,labels", [("demo", 81), ("broden", 1197)])
def test_cli_writes_a_readable_dataset(tmp_path, capsys, profile, labels):
    out = tmp_path / "cli"
    chosen = [] if profile == "demo" else ["--profile", profile]     # demo: the default
    assert _cli().main(["--out", str(out), "--num-images", "12", "--image-size", "32",
                        "--seg-size", "16", "--seed", "2", "--workers", "1",
                        "--no-progress", *chosen]) == 0
    assert f"wrote 12 images of profile {profile} ({labels} labels" in \
        capsys.readouterr().out
    d = BrodenDataset(out)
    assert len(d) == 12 and d.segmentation_size() == (16, 16)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        write_dataset(tmp_path / "x", num_images=0, progress=False)
    with pytest.raises(ValueError, match="seg"):
        render_image(0, 0, 32, 64)
    with pytest.raises(ValueError, match="seed"):
        render_image(0, -1, 32, 16)


# ----------------------------------------------------------------------------- profiles

def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for name, data in _files(d).items():
        h.update(name.encode())
        h.update(data)
    return h.hexdigest()


def test_demo_profile_output_is_unchanged(tmp_path):
    """The demo profile writes the same bytes as before profiles existed (digest of the
    files written by commit 086aa50; change it only when the demo is meant to change)."""
    d = write_dataset(tmp_path / "demo", num_images=24, image_size=48, seg_size=24, seed=3,
                      workers=1, progress=False)
    assert _digest(d) == "66ab54de0dce1ab04d4c12a610d9f2641040932f841cd71ad2c6cb44515bc1ee"
    assert _files(write_dataset(tmp_path / "demo2", num_images=24, image_size=48,
                                seg_size=24, seed=3, workers=1, progress=False,
                                profile="demo")) == _files(d)


def test_unknown_profile_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="profile must be one of demo, broden"):
        write_dataset(tmp_path / "x", num_images=2, profile="huge", progress=False)


# ----------------------------------------------------------------------------- broden profile

BN, BIMG, BSEG, BSEED = 300, 64, 32, 4


@pytest.fixture(scope="module")
def bgen(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("broden") / "broden"
    return write_dataset(d, num_images=BN, image_size=BIMG, seg_size=BSEG, seed=BSEED,
                         workers=1, progress=False, profile="broden")


@pytest.fixture(scope="module")
def bds(bgen) -> BrodenDataset:
    return BrodenDataset(bgen)


@pytest.fixture(scope="module")
def blabels(bgen, bds, tmp_path_factory):
    return build_label_cache(bds, tmp_path_factory.mktemp("blab") / "labels.zarr",
                             chunk_images=64, workers=1, progress=False)


def test_broden_catalogue_has_brodens_shape():
    cat = broden_catalogue()
    assert [c.number for c in cat.concepts] == list(range(1, NUM_LABELS + 1)) == \
        list(range(1, 1198))
    assert len({c.name for c in cat.concepts}) == NUM_LABELS
    members = Counter(g for c in cat.concepts for g in c.categories)
    assert dict(members) == CATEGORY_SIZES == {"color": 11, "object": 584, "part": 234,
                                               "material": 32, "scene": 468, "texture": 47}
    doubles = Counter(c.categories for c in cat.concepts if c.also)
    assert doubles == {("object", "part"): 165, ("object", "material"): 14}
    for name, cats in (("door", ("object", "part")), ("window", ("object", "part")),
                       ("grass", ("object", "material")), ("head", ("part",)),
                       ("wall", ("object",)), ("sky", ("object",))):
        assert cat.concepts[cat.number(name) - 1].categories == cats, name
    # numbered by expected frequency; heavy tail; wall on most scene images
    e = cat.expected[1:]
    assert (np.diff(e) <= 0).all()
    assert e[0] > 1000 * e[-1] > 0 and 20 <= np.median(e) <= 80
    assert cat.expected[cat.number("wall")] > 0.7 * SOURCE_IMAGES["ade20k"]
    # every role draws real labels of its categories
    for src, roles in cat.roles.items():
        assert set(roles) == set(SOURCE_CATEGORIES[src]) - {"color"}
        for c, role in roles.items():
            assert all(c in cat.concepts[n - 1].categories for n in role.labels), (src, c)


def test_broden_source_counts():
    assert source_counts(63305) == SOURCE_IMAGES == {"ade20k": 22210, "pascal": 10103,
                                                     "opensurfaces": 25352, "dtd": 5640}
    for n in (1, 2, 7, 300, 3000, 12345):
        counts = source_counts(n)
        assert sum(counts.values()) == n
        for src, full in SOURCE_IMAGES.items():
            assert abs(counts[src] - n * full / 63305) < 1, (n, src)
        seq = image_sources(n, 0)
        assert Counter(BRODEN_SOURCES[k] for k in seq) == {k: v for k, v in counts.items()
                                                          if v}
    assert not np.array_equal(image_sources(300, 0), image_sources(300, 1))


def test_broden_tables(bgen, bds):
    """Broden's category sizes in category.csv and the c_*.csv maps, whatever N; the
    tables agree with the decoded labels; primary categories as intended."""
    cats = {r["name"]: r for r in _read(bgen / "category.csv")}
    assert list(cats) == list(CATEGORIES)
    assert {c: int(r["count"]) for c, r in cats.items()} == CATEGORY_SIZES
    for c in CATEGORIES:
        assert len(_read(bgen / f"c_{c}.csv")) == CATEGORY_SIZES[c]
    cat = broden_catalogue()
    assert [r["name"] for r in _read(bgen / "label.csv")] == [c.name for c in cat.concepts]
    _check_tables(bgen, bds, cat.concepts, BSEG)
    for c in cat.concepts:          # single-category labels: always; doubles: mostly
        if not c.also:
            assert bds.all_categories[bds.primary_category[c.number]] == c.category
    wrong = [c for c in cat.concepts
             if bds.all_categories[bds.primary_category[c.number]] != c.category]
    assert len(wrong) < 0.1 * sum(1 for c in cat.concepts if c.also)


def test_broden_sources_and_categories(bds):
    counts = Counter(r.image.split("/")[0] for r in bds.rows)
    assert counts == source_counts(BN)
    for r in bds.rows:
        src = r.image.split("/")[0]
        have = {c for c, cell in r.cells.items() if cell}
        assert have <= set(SOURCE_CATEGORIES[src]) and "color" in have, r.row
        if src == "ade20k":
            assert {"object", "scene"} <= have and len(r.cells["scene"]) == 1
            assert len(r.cells["part"]) <= 4
        if src == "pascal":
            assert len(r.cells["part"]) <= 1
        if src == "dtd":
            assert 1 <= len(r.cells["texture"]) <= 3


def test_broden_label_numbers_use_the_green_channel(bgen, bds):
    """Label numbers above 255 and 1,024 are written as R + 256*G and read back."""
    seen = set()
    for r in bds.rows:
        for c in ("object", "part"):
            for name in r.cells[c]:
                a = np.asarray(Image.open(bgen / "images" / name)).astype(np.int64)
                assert (a[:, :, 2] == 0).all()
                seen.update(np.unique(a[:, :, 0] + 256 * a[:, :, 1]).tolist())
    assert max(seen) > 1024 and sum(v > 1024 for v in seen) >= 3
    assert sum(v > 255 for v in seen) >= 30


def test_broden_pixels_carry_five_to_seven_labels(bds, blabels):
    """Colour + object + part levels + scene: 5-7 labels on pixels of most ADE images,
    counted in the label cache built from the files."""
    t = blabels.read(0, BN)
    n = (t.planes != 0).sum(axis=1) + (t.scalars != 0).sum(axis=1)[:, None, None]
    ade = np.array([r.image.startswith("ade20k/") for r in bds.rows])
    most = n.reshape(BN, -1).max(axis=1)
    assert most.max() == 7 and most[~ade].max() <= 4      # dtd: colour + 3 textures
    assert (most[ade] >= 5).mean() > 0.7
    assert blabels.planes.shape[1] == 6              # colour, object, four part levels
    assert blabels.num_labels == NUM_LABELS + 1


def test_broden_frequencies_are_heavy_tailed_in_number_order(bgen, bds):
    lab = _read(bgen / "label.csv")
    freq = np.array([int(r["frequency"]) for r in lab], dtype=float)
    blocks = [freq[a:b].mean() for a, b in ((0, 20), (20, 100), (100, 400), (400, 1197))]
    assert all(x > 2 * y for x, y in zip(blocks, blocks[1:])), blocks
    cat = broden_catalogue()
    want = cat.expected[1:] * BN / 63305
    big = want > 5
    assert np.corrcoef(np.log(freq[big] + 1), np.log(want[big]))[0, 1] > 0.9
    for src, name in (("ade20k", "wall"), ("pascal", "person")):
        rows = [i for i, r in enumerate(bds.rows) if r.image.startswith(src + "/")]
        n = cat.number(name)
        share = np.mean([n in bds.load_labels(i).label_set() for i in rows])
        assert share > 0.5, (name, share)


def test_broden_reader_matches_ground_truth(bds):
    for i in range(0, BN, 7):
        g = render_broden_image(i, BSEED, BN, BIMG, BSEG)
        lab = bds.load_labels(i)
        want = [p for c in CATEGORIES for p in g.planes[c]]
        assert len(lab.planes) == len(want)
        assert all(np.array_equal(a, b) for a, b in zip(lab.planes, want)), i
        assert lab.scalars.tolist() == [v for c in CATEGORIES for v in g.scalars[c]]
        assert bds.rows[i].image.startswith(g.source + "/")


def test_broden_same_files_for_any_workers_and_seeded(tmp_path):
    kw = dict(num_images=40, image_size=48, seg_size=24, progress=False, profile="broden")
    a = write_dataset(tmp_path / "a", seed=1, workers=1, **kw)
    b = write_dataset(tmp_path / "b", seed=1, workers=2, **kw)
    c = write_dataset(tmp_path / "c", seed=2, workers=1, **kw)
    assert _files(a) == _files(b)
    assert (a / "index.csv").read_bytes() != (c / "index.csv").read_bytes()


def test_broden_images_look_like_their_labels():
    """Inside an object (away from its parts and edges) the pixels have its look's colour."""
    cat = broden_catalogue()
    near = []
    for i in range(60):
        g = render_broden_image(i, 0, 60, 96, 96)
        if g.source != "opensurfaces":
            continue
        mat = g.planes["material"][0]
        for n in np.unique(mat[mat != 0]):
            m = mat == n
            if m.sum() > 400:
                near.append(np.abs(g.image[m].mean(0) - cat.looks.rgb[n]).mean())
    assert len(near) > 5 and np.median(near) < 40
