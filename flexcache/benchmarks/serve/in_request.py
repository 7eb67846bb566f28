"""In-request caches in the serving benchmark: the `<system>+<method>` variants.

A method keeps a fraction of each denoising step's compute. On a full run
that fraction is the public per-model speed-up where one is published for
the profile's family (`shared/SERVING-FACTS.md`), else the toy world's
(`flexcache bench compose`). A run resumed by a cross-request cache keeps a
different fraction: it has no cached residual at its first step and starts
past the method's warm-up. That change is the toy world's ratio of the
per-step fractions, resumed against full runs, at the method's operating
point (adherence >= 98 % of uncached), applied to the full-run fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

from flexcache.core import ConfigError

# `flexcache bench compose --json bench/results/2026-12-02-cpu-compose.json`: per method, at its operating point,
# the block evaluations a full (fresh-prompt) run keeps and those a resumed run keeps per step it runs.
TOYWORLD_SOURCE = "bench/results/2026-12-02-cpu-compose.json"
ADHERENCE_FLOOR = 0.98  # of uncached: the compose bench's operating-point rule


@dataclass(frozen=True)
class InRequestMethod:
    name: str
    setting: float  # the compose bench's operating point (threshold or interval)
    toy_full_fraction: float  # compute a full run keeps per step, on the toy world
    toy_resumed_fraction: float  # compute a resumed run keeps per step it runs, on the toy world
    composed_adherence: float  # toy-world adherence with FlexCache at `setting`, against uncached
    public: tuple[tuple[str, float, str], ...] = ()  # (profile-name prefix, full-run speed-up, source)

    def step_fraction(self, profile_name: str, *, resumed: bool) -> tuple[float, str]:
        """The compute kept per step on `profile_name`'s model, and where the figure comes from."""
        toy = f"toy world at setting {self.setting:g} ({TOYWORLD_SOURCE})"
        full, source = self.toy_full_fraction, toy
        for prefix, speedup, public_source in self.public:
            if profile_name.startswith(prefix):
                full, source = 1.0 / speedup, public_source
                break
        if not resumed:
            return full, source
        return (full * self.toy_resumed_fraction / self.toy_full_fraction,
                f"{source}; resumed runs change it as the {toy} does")

    @property
    def meets_adherence_floor(self) -> bool:
        """Whether FlexCache with this method at `setting` kept >= 98 % of uncached adherence on the toy world."""
        return self.composed_adherence >= ADHERENCE_FLOOR

    def describe(self, profile_name: str) -> dict:
        """The JSON record of this method on `profile_name`: fractions, sources, and the toy-world adherence."""
        return {"method": self.name, "setting": self.setting,
                "full_run": self.step_fraction(profile_name, resumed=False),
                "resumed_run": self.step_fraction(profile_name, resumed=True),
                "composed_adherence": self.composed_adherence,
                "meets_adherence_floor": self.meets_adherence_floor}


# The compose bench's operating points (TOYWORLD_SOURCE): the setting whose adherence with FlexCache stays
# >= 98 % of uncached and saves the most; MagCache has none there, so its setting is the one alone (below the
# floor with FlexCache: 96.6 %). The public figures are full runs.
METHODS: dict[str, InRequestMethod] = {m.name: m for m in (
    InRequestMethod("fbc", 0.2, 0.627, 0.689, 0.989,
                    (("hunyuanvideo", 1.62, "FBCache on HunyuanVideo 1.62x (ParaAttention docs)"),)),
    InRequestMethod("magcache", 0.5, 0.40, 0.36, 0.966,
                    (("wan2.1", 2.68, "MagCache 2.68x on Wan2.1 (MagCache paper)"),
                     ("hunyuanvideo", 2.82, "MagCache 2.82x on HunyuanVideo (MagCache paper)"))),
    InRequestMethod("taylorseer", 2.0, 0.55, 0.57, 0.989,
                    (("hunyuanvideo", 5.0, "TaylorSeer up to 5x on HunyuanVideo (paper; a best case)"),)),
)}


def get_method(name: str) -> InRequestMethod:
    try:
        method = METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown in-request method {name!r}; choose one of {', '.join(METHODS)}") from None
    return method
