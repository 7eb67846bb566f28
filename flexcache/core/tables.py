"""The similarity -> depth tables the planner ships with, and where each was calibrated.

Every table here says what it was fitted on: a model nobody calibrated for should not trust
the toy world's depths (README, "Calibration"). Cosines depend on the embedder, so each shipped
calibration exists once per embedder (`EMBEDDER_TABLES`); `CacheConfig` gives the planner the
tables of the embedder it configures (`tables_for_embedder`).
"""

from __future__ import annotations

# NIRVANA (NSDI'24) similarity -> skip table, K as a fraction of N steps.
NIRVANA_SIMILARITY_TABLE: tuple[tuple[float, float], ...] = (
    (0.65, 0.10),
    (0.75, 0.20),
    (0.85, 0.30),
    (0.90, 0.40),
    (0.95, 0.50),
)
# The full-prompt table calibrated on the toy world (`flexcache bench quality`, 2026-12-02;
# README "Calibration"): the cosine only 0.1 % of random prompt pairs with another spec
# reach still admits one-attribute edits ("... drifting left" / "... drifting right"),
# which are safe only to 20 % of N; the same text (up to embedding noise) is safe deep.
TOYWORLD_SIMILARITY_TABLE: tuple[tuple[float, float], ...] = (
    (0.890, 0.20),
    (0.9999, 0.50),  # measured safe to 80 %; the deepest default checkpoint is 50 %
)
SIMILARITY_TABLES: dict[str, tuple[tuple[float, float], ...]] = {
    "nirvana": NIRVANA_SIMILARITY_TABLE, "toyworld": TOYWORLD_SIMILARITY_TABLE,
}
# Decoupled look-up rules: (min object-part cosine, min background-part cosine,
# fraction of N), from `flexcache bench quality` on the toy world (README,
# "Decoupled look-up"): an object part at cosine >= 0.834 (1 % of random pairs
# with a different object reach it) may resume from 20 % of N whatever the
# background; no same-background rule (even 20 % of N cost 8 points of adherence).
PART_SIMILARITY_TABLE: tuple[tuple[float, float, float], ...] = (
    (0.828, -1.0, 0.20),
)
DEFAULT_CHECKPOINT_FRACTIONS: tuple[float, ...] = (0.10, 0.20, 0.30, 0.40, 0.50)
# Region rules: (part that matches and is kept, min cosine of that part,
# fraction of N); the other part is generated anew (`engine.regions`).
# Calibrated on the toy world (README, "Region hits").
REGION_TABLE: tuple[tuple[str, float, float], ...] = (
    ("background", 0.849, 0.40),
    ("object", 0.828, 0.40),
)

# The same toy-world calibration with the multilingual default embedder (Universal Sentence Encoder
# multilingual v3, `engine.packaged_embedders`): the same procedure, cases admitted and depths, the
# thresholds at the same false-match rates of its own cosines (bench/results/2026-12-07-cpu-languages.md;
# the adherence rows of bench/results/2026-12-02-cpu-quality.json reused).
USE_SIMILARITY_TABLE: tuple[tuple[float, float], ...] = ((0.8663, 0.20), (0.9999, 0.50))
USE_PART_SIMILARITY_TABLE: tuple[tuple[float, float, float], ...] = ((0.8119, -1.0, 0.20),)
USE_REGION_TABLE: tuple[tuple[str, float, float], ...] = (("background", 0.8755, 0.40), ("object", 0.8119, 0.40))

MINILM_MODEL = "all-MiniLM-L6-v2"
MULTILINGUAL_MODEL = "use-multilingual-v3"
# embedder.model -> its toy-world calibration of the three planner tables.
EMBEDDER_TABLES: dict[str, dict[str, tuple]] = {
    MINILM_MODEL: {"similarity_table": TOYWORLD_SIMILARITY_TABLE, "part_table": PART_SIMILARITY_TABLE,
                   "region_table": REGION_TABLE},
    MULTILINGUAL_MODEL: {"similarity_table": USE_SIMILARITY_TABLE, "part_table": USE_PART_SIMILARITY_TABLE,
                         "region_table": USE_REGION_TABLE},
}
EMBEDDER_TABLES["multilingual"] = EMBEDDER_TABLES[MULTILINGUAL_MODEL]
DEFAULT_EMBEDDER_MODEL = "multilingual"


def tables_for_embedder(model: str, tables: dict[str, tuple]) -> tuple[dict[str, tuple], bool]:
    """The planner tables to use with embedder `model`, and whether a shipped calibration stays unmatched.

    `tables` holds the configured ``similarity_table``, ``part_table`` and ``region_table``. Each one
    that is a shipped toy-world calibration (of any embedder) is replaced by `model`'s own; tables
    the operator wrote stay as they are. The flag is True when a shipped table meets an embedder
    nobody calibrated (its cosines are on another scale).
    """
    own = EMBEDDER_TABLES.get(model)
    out, unmatched = dict(tables), False
    for name, value in tables.items():
        shipped = any(value == calibration[name] for calibration in EMBEDDER_TABLES.values())
        if not shipped:
            continue
        if own is None:
            unmatched = True
        else:
            out[name] = own[name]
    return out, unmatched


# What a model nobody calibrated gets (``planner.uncalibrated``): NIRVANA's published full-prompt
# table (NSDI'24, Table 2: CLIP text cosines on SDXL images), and no part or region rules, whose
# depths only the toy world measured. Our embedders put unrelated prompts lower than CLIP does
# (README, "Calibrating for your model"), so on their cosines these rows admit fewer pairs than
# NIRVANA's own.
UNCALIBRATED_SIMILARITY_TABLE: tuple[tuple[float, float], ...] = NIRVANA_SIMILARITY_TABLE

# The generation settings the shipped (toy-world) tables were measured at: the packaged toy-world
# model, its flow-matching Euler scheduler at shift 1, 20 steps, guidance 3 (bench quality,
# 2026-12-02). `tests/core/test_tables.py` checks these against `toyworld_pipeline()`'s signature.
TOYWORLD_CALIBRATED_AT: dict[str, object] = {
    "model_id": "flexcache/toyworld-wan-v2",
    "scheduler": "FlowMatchEulerDiscreteScheduler:5f8baca29d8e927c",
    "num_steps": 20,
    "guidance_scale": "3.0",
}


def is_shipped(tables: dict[str, tuple]) -> bool:
    """Whether `tables` (similarity, part, region) are all one embedder's shipped toy-world calibration."""
    return any(all(tables[name] == calibration[name] for name in calibration)
               for calibration in EMBEDDER_TABLES.values())


def measured_at_shipped_settings(signature: dict[str, object]) -> bool:
    """Whether a signature (`GenerationSignature.to_dict()`) is the one the shipped tables were measured at."""
    extra = dict(tuple(pair) for pair in signature.get("extra", ()))
    return (all(signature.get(k) == TOYWORLD_CALIBRATED_AT[k] for k in ("model_id", "scheduler", "num_steps"))
            and extra.get("guidance_scale") == TOYWORLD_CALIBRATED_AT["guidance_scale"])
