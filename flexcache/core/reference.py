"""The configuration reference (docs/config.md), generated from the config dataclasses and the name lists.

``flexcache config --reference`` prints it; a test checks that docs/config.md
is what it prints, so the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import re
import typing

from flexcache.core import names
from flexcache.core.config import (
    CacheConfig,
    CodecConfig,
    EmbedderConfig,
    IndexConfig,
    PlannerConfig,
    PoolConfig,
    QualityConfig,
    SharingConfig,
    StoreConfig,
)
from flexcache.core.quality_config import AUDIT_SCORERS
from flexcache.core.tiers import PINNING, TIER_CONFIGS

# Where a field's value must be one of a list of names (the lists are the ones config validation uses).
CHOICES: dict[str, tuple[str, ...]] = {
    "policy": names.POLICIES,
    "embedder.device": names.DEVICES,
    "index.backend": names.INDEX_BACKENDS,
    "index.approximate": names.APPROXIMATE_INDEXES,
    "index.device": names.DEVICES,
    "planner.lookup": names.LOOKUPS,
    "planner.region_method": names.REGION_METHODS,
    "planner.region_table": names.REGION_PARTS,
    "codec.name": names.CODECS,
    "codec.budget_mode": names.BUDGET_MODES,
    "codec.lossless": names.LOSSLESS_ALGORITHMS,
    "codec.backend": names.KERNEL_BACKENDS,
    "store.tier": ("memory", "host", "hbm"),
    "store.tiers[].kind": names.TIER_KINDS,
    "store.tiers[host].pinned": PINNING,
    "quality.audit_scorer": AUDIT_SCORERS,
}
SECTIONS = (("", CacheConfig), ("embedder.", EmbedderConfig), ("index.", IndexConfig),
            ("planner.", PlannerConfig), ("codec.", CodecConfig), ("store.", StoreConfig),
            ("sharing.", SharingConfig), ("sharing.pools[].", PoolConfig), ("quality.", QualityConfig))


def _arg_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the class docstring's Google-style ``Args:`` section."""
    doc = cls.__doc__ or ""
    match = re.search(r"^\s*Args:\s*$(.*?)(?=^\s*(?:Example|Raises|Returns)s?:\s*$|\Z)", doc, re.M | re.S)
    if not match:
        return {}
    found: dict[str, str] = {}
    current: list[str] = []
    for line in match.group(1).splitlines():
        head = re.match(r"^\s{8}([A-Za-z_][A-Za-z0-9_, ]*):\s*(.*)$", line)
        if head:
            current = [name.strip() for name in head.group(1).split(",")]
            for name in current:
                found[name] = head.group(2).strip()
        elif line.strip() and current:
            for name in current:
                found[name] += " " + line.strip()
    return found


def _type_name(hint: object) -> str:
    text = getattr(hint, "__name__", None) or str(hint)
    # An optional type (``float | None``) must not end its Markdown table cell.
    return text.replace("typing.", "").replace("flexcache.core.tiers.", "").replace("|", "\\|")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "required"
    if isinstance(value, tuple):
        value = [list(v) if isinstance(v, tuple) else v for v in value]
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _table(cls: type, prefix: str) -> list[str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's description of a field wins
        docs.update(_arg_docs(klass))
    hints = typing.get_type_hints(cls)
    lines = ["| key | type | default | one of | meaning |", "|---|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            continue  # a section of its own
        choices = CHOICES.get(key, ())
        meaning = " ".join(docs.get(field.name, "").split()).replace("|", "\\|")
        lines.append(f"| `{key}` | {_type_name(hints[field.name])} | {_default(field)} | "
                     f"{', '.join(f'`{c}`' for c in choices)} | {meaning} |")
    return lines


def config_reference() -> str:
    """The Markdown of docs/config.md."""
    out = ["# FlexCache configuration reference", "",
           "Generated from `flexcache/core` by `flexcache config --reference`; a test keeps this file equal to "
           "its output. Set values in YAML (`flexcache --config file.yaml`, or `$FLEXCACHE_CONFIG`), as a dict "
           "(`CacheConfig.from_dict`), or per field from the environment: `FLEXCACHE_<FIELD>` for top-level "
           "fields, `FLEXCACHE_<SECTION>__<FIELD>` for nested ones (values are parsed as YAML). Byte sizes take "
           "`1048576`, `\"512MiB\"` or `\"4GB\"`.", ""]
    for prefix, cls in SECTIONS:
        title = prefix.rstrip(".") or "top level"
        out += [f"## {title}", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
        out += _table(cls, prefix)
        out.append("")
    out += ["## store.tiers[]: one entry per tier, fastest first", "",
            "Each entry names its `kind` (one of " + ", ".join(f"`{k}`" for k in names.TIER_KINDS) + ") and "
            "takes that kind's fields:", ""]
    for kind in names.TIER_KINDS:
        cls = TIER_CONFIGS[kind]
        out += [f"### kind: {kind}", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
        out += _table(cls, f"store.tiers[{kind}].")
        out.append("")
    return "\n".join(out)
