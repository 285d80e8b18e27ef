"""Integrity of metadata (every ``zarr.json``): read it with named errors, digest it, keep
a copy of a store's root attributes, and restore what a layout can re-lay.

A store sealed by :func:`seal` (a run when its layout is complete, a label cache when its
layout is ready) holds::

    ROOT/zarr.json          root attrs, plus metadata_sha256: {node: sha256}, the
                            digest of every node's zarr.json laid out at that moment
                            (canonical JSON: sorted keys, no whitespace)
    ROOT/attrs-copy.json    {"attrs": the root attrs as sealed, "sha256": of them}:
                            the second copy of the store's identity, written (atomically:
                            temp file then rename) just before the root's own last write

Checks (:func:`find_damage`): the root's zarr.json parses and its attrs equal the copy's
(apart from ``volatile`` keys that change legitimately, e.g. a label cache's
``complete``), and every digested node's zarr.json parses and has its digest. Anything
else is :class:`MetaDamage` (file, what is wrong), raised as :class:`MetadataError` with
the repair command (:func:`check`). Repair (:func:`restore`) writes the exact bytes a
layout function lays out again in memory (``cache.activations.layout_metadata``,
``cache.labels.layout_metadata``) for each damaged node, root included (its attrs from
the copy), never touching a chunk: the chunk scan that follows decides what to redo.

Writes: zarr 3.1's LocalStore writes every key to ``<key>.<uuid>.partial`` and renames it
into place, so a kill -9 never leaves a torn zarr.json (a power cut may, without fsync:
the copy and the digests make that case repairable). Stores sealed before this module
existed have no digests and no copy: only readability is checked there.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from cache.store import RunError, is_url, location, store_location

COPY_NAME = "attrs-copy.json"
DIGESTS = "metadata_sha256"
META = "zarr.json"


class MetadataError(RunError):
    """A zarr.json (or the copy of the root attrs) is unreadable or changed after writing."""


@dataclass(frozen=True)
class MetaDamage:
    """One damaged metadata file: ``key`` (store key), ``file`` (path or URL), ``problem``."""
    key: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(obj: Any) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def open_store(where: str | os.PathLike, read_only: bool = True):
    """A zarr store of a local directory or fsspec URL (no group is opened)."""
    where = location(where)
    if is_url(where):
        from zarr.storage import FsspecStore
        return FsspecStore.from_url(str(where), read_only=read_only)
    from zarr.storage import LocalStore
    return LocalStore(Path(where), read_only=read_only)


def node_key(node: str) -> str:
    """The store key of node ``node``'s metadata ("" = the root)."""
    return f"{node}/{META}" if node else META


def _get(zstore, key: str) -> bytes | None:
    data = _get_many(zstore, [key])[0]
    if isinstance(data, OSError):
        raise data
    return data


def _keys(zstore) -> list[str]:
    async def listing() -> list[str]:
        return [k async for k in zstore.list_prefix("")]
    return sync(listing())


def _put(zstore, key: str, data: bytes) -> None:
    sync(zstore.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def exists(zstore) -> bool:
    """True when the store holds a root zarr.json or the copy of the root attrs."""
    return any(sync(zstore.exists(k)) for k in (META, COPY_NAME))


def _get_many(zstore, keys: list[str]) -> list[bytes | None | OSError]:
    """The bytes of ``keys`` (None: absent; an OSError: unreadable), fetched together."""
    async def fetch(key: str):
        try:
            buf = await zstore.get(key, prototype=default_buffer_prototype())
        except OSError as e:
            return e
        return None if buf is None else buf.to_bytes()

    async def every():
        return await asyncio.gather(*(fetch(k) for k in keys))
    return sync(every())


def read_json(zstore, key: str) -> tuple[dict | None, str | None]:
    """(parsed JSON object, None) or (None, what is wrong with it)."""
    return parse_json(_get_many(zstore, [key])[0])


def parse_json(data: bytes | None | OSError) -> tuple[dict | None, str | None]:
    """As read_json, of what _get_many fetched."""
    if isinstance(data, OSError):
        return None, f"cannot be read ({data})"
    if data is None:
        return None, "is missing"
    try:
        obj = json.loads(data)
    except ValueError as e:
        return None, f"is not valid JSON ({len(data)} bytes; truncated or overwritten: {e})"
    if not isinstance(obj, dict):
        return None, "is not a JSON object"
    return obj, None


def read_copy(zstore) -> tuple[dict | None, str | None]:
    """(the sealed root attrs, None), (None, None) when there is no copy, or (None, what
    is wrong with the copy)."""
    return _copy_from(_get_many(zstore, [COPY_NAME])[0])


def _copy_from(data: bytes | None | OSError) -> tuple[dict | None, str | None]:
    obj, problem = parse_json(data)
    if problem == "is missing":
        return None, None
    if problem:
        return None, problem
    attrs = obj.get("attrs")
    if not isinstance(attrs, dict) or obj.get("sha256") != sha256(attrs):
        return None, "does not match its own sha256 (changed after writing)"
    return attrs, None


def _node_problem(meta: dict | None, problem: str | None, want: str) -> str | None:
    if problem:
        return problem
    if not {"zarr_format", "node_type"} <= set(meta):
        return "is not Zarr v3 metadata (no zarr_format or node_type)"
    if want and sha256(meta) != want:
        return "metadata changed after writing (its sha256 differs from the one recorded " \
               "in the root's metadata_sha256)"
    return None


def find_damage(zstore, volatile: Iterable[str] = ()) -> tuple[list[MetaDamage], dict | None]:
    """(every damaged metadata file of the store, the root attrs to trust: the copy's,
    else the root's, else None)."""
    def where(key: str) -> str:
        return str(store_location(zstore, key))
    damage: list[MetaDamage] = []
    root_bytes, copy_bytes = _get_many(zstore, [META, COPY_NAME])
    root, problem = parse_json(root_bytes)
    copy, copy_problem = _copy_from(copy_bytes)
    if copy_problem:
        damage.append(MetaDamage(COPY_NAME, where(COPY_NAME), copy_problem))
    if root is not None and not isinstance(root.get("attributes", {}), dict):
        problem = "holds no attributes object"
    if problem:
        damage.append(MetaDamage(META, where(META), problem))
        root = None
    attrs = root.get("attributes", {}) if root is not None else None
    if attrs is not None and copy is not None:
        differ = sorted(k for k in set(attrs) | set(copy) if k not in set(volatile)
                        and attrs.get(k) != copy.get(k))
        if differ:
            damage.append(MetaDamage(META, where(META), f"attributes changed after writing "
                                     f"({', '.join(differ)} differ from {COPY_NAME})"))
    trusted = copy if copy is not None else attrs
    digests = sorted(((trusted or {}).get(DIGESTS) or {}).items())
    fetched = _get_many(zstore, [node_key(node) for node, _ in digests])
    for (node, want), data in zip(digests, fetched):
        problem = _node_problem(*parse_json(data), want)
        if problem:
            damage.append(MetaDamage(node_key(node), where(node_key(node)), problem))
    return damage, trusted


def child(group: zarr.Group, key: str, fix: Callable[[], str]):
    """``group[key]``; when its zarr.json is there but unreadable or not Zarr metadata, a
    MetadataError naming the file and ``fix()`` (an absent node raises as zarr does)."""
    try:
        return group[key]
    except Exception as e:                      # noqa: BLE001 - inspected below
        k = node_key(f"{group.path}/{key}".strip("/"))
        meta, problem = read_json(group.store, k)
        if problem == "is missing":
            raise
        problem = problem or f"is not valid Zarr metadata ({type(e).__name__}: {e})"
        damage = [MetaDamage(k, str(store_location(group.store, k)), problem)]
        raise MetadataError(describe(damage, fix())) from None


def describe(damage: list[MetaDamage], fix: str) -> str:
    lines = "\n  ".join(str(d) for d in damage)
    return f"{len(damage)} damaged metadata file(s):\n  {lines}\n{fix}"


def check(zstore, fix: Callable[[dict | None], str], volatile: Iterable[str] = ()) -> dict:
    """The trusted root attrs of a store whose metadata is intact; else MetadataError
    naming every damaged file and ``fix(trusted attrs)`` (the repair command)."""
    damage, trusted = find_damage(zstore, volatile)
    if damage:
        raise MetadataError(describe(damage, fix(trusted)))
    return trusted or {}


def node_digests(zstore) -> dict[str, str]:
    """{node: sha256} of every node's zarr.json below the root (the root excluded)."""
    out = {}
    for key in sorted(_keys(zstore)):
        if key.endswith("/" + META):
            meta, problem = read_json(zstore, key)
            if problem is None:
                out[key[: -len(META) - 1]] = sha256(meta)
    return out


def seal(group: zarr.Group, marker: str) -> None:
    """Record the digests of every node of ``group``'s layout, write the copy of the
    root attrs (with them and ``marker`` = True), then the root attrs in one write."""
    zstore = group.store
    final = dict(group.attrs, **{DIGESTS: node_digests(zstore), marker: True})
    _put(zstore, COPY_NAME, canonical({"attrs": final, "sha256": sha256(final)}))
    group.attrs.update({DIGESTS: final[DIGESTS], marker: True})


def update_root_attrs(group: zarr.Group, changes: dict) -> None:
    """Change root attrs of a sealed store and its copy together (the one legitimate way
    to change a sealed store's identity, e.g. a dataset that moved)."""
    copy, _ = read_copy(group.store)
    if copy is not None:
        new = dict(copy, **changes)
        _put(group.store, COPY_NAME, canonical({"attrs": new, "sha256": sha256(new)}))
    group.attrs.update(changes)


def layout_bytes(lay_out: Callable[[Any], None], attrs: dict) -> dict[str, bytes]:
    """{store key: bytes} of every zarr.json that ``lay_out(store)`` writes into an empty
    in-memory store (nothing is written elsewhere), the root's with attrs ``attrs``."""
    from zarr.storage import MemoryStore
    mem = MemoryStore()
    lay_out(mem)
    out = {k: _get(mem, k) for k in _keys(mem) if k.endswith(META)}
    root = MemoryStore()
    zarr.open_group(root, mode="w", attributes=attrs)
    out[META] = _get(root, META)
    return out


def restore(zstore, expected: dict[str, bytes], damage: list[MetaDamage],
            trusted: dict) -> list[MetaDamage]:
    """Write the laid-out bytes of every damaged node (``expected`` from layout_bytes);
    a node's bytes must have its recorded digest. Returns what could not be restored."""
    want = dict(trusted.get(DIGESTS) or {})
    left = []
    for d in damage:
        if d.key == COPY_NAME:
            _put(zstore, COPY_NAME, canonical({"attrs": trusted, "sha256": sha256(trusted)}))
            continue
        data = expected.get(d.key)
        node = d.key[: -len(META)].rstrip("/")
        if data is None or (node and sha256(json.loads(data)) != want.get(node)):
            left.append(d)
            continue
        _put(zstore, d.key, data)
    return left
