"""Request traces for the serving benchmark: a JSONL format and a synthetic generator.

Trace format: one JSON object a line, ordered by arrival::

    {"t": 12.5, "tenant": "default", "prompt": "a red fox running through snow",
     "user": "u17", "seed": 42, "height": 480, "width": 832, "frames": 81, "steps": 50}

``t`` (seconds from the start, non-decreasing), ``tenant`` and ``prompt`` are
required; the rest are optional (the model profile's defaults apply). Real
logs convert to it directly: VidProM and DiffusionDB ship a prompt and a
timestamp per row (``t`` = timestamp minus the first one; ``user`` from the
user id column where the dataset has one).

The synthetic generator stands in when no log is at hand. Every parameter of
`SyntheticWorkload` has a default with its source (`DEFAULT_SOURCES`); the
ones no public figure pins down are marked "assumption".
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexcache.core import TENANT_PATTERN, InvalidTraceError

OPTIONAL_INT_FIELDS = ("seed", "height", "width", "frames", "steps")


@dataclass(frozen=True)
class TraceRequest:
    t: float
    tenant: str
    prompt: str
    user: str | None = None
    seed: int | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, separators=(",", ":"))


def parse_request(data: object, where: str = "request") -> TraceRequest:
    """One trace line's object as a `TraceRequest`; `InvalidTraceError` says what is wrong and where."""
    if not isinstance(data, dict):
        raise InvalidTraceError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = set(data) - {"t", "tenant", "prompt", "user", *OPTIONAL_INT_FIELDS}
    if unknown:
        raise InvalidTraceError(f"{where}: unknown fields {sorted(unknown)}")
    t = data.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise InvalidTraceError(f"{where}: 't' must be a finite number of seconds >= 0; got {t!r}")
    tenant = data.get("tenant")
    if not isinstance(tenant, str) or TENANT_PATTERN.fullmatch(tenant) is None:
        raise InvalidTraceError(f"{where}: 'tenant' must be 1-64 characters of [A-Za-z0-9_-]; got {tenant!r}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidTraceError(f"{where}: 'prompt' must be a non-empty string")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidTraceError(f"{where}: 'user' must be a string when given")
    ints = {}
    for name in OPTIONAL_INT_FIELDS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                                  or (name != "seed" and value == 0)):
            raise InvalidTraceError(f"{where}: {name!r} must be a positive integer when given; got {value!r}")
        ints[name] = value
    return TraceRequest(float(t), tenant, prompt, user, **ints)


def jsonl_values(path: str | Path, error: type[Exception], what: str = "") -> Iterator[tuple[str, Any]]:
    """``(where, value)`` of each non-blank line of a JSONL file, `where` being ``path:line``.

    `error` (a `FlexCacheError` subclass) names a file that cannot be read (`what` says what it
    is, e.g. ``"trace "``) or a line that is not JSON.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise error(f"cannot read {what}{path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not JSON ({exc.msg})") from None


def read_trace(path: str | Path) -> list[TraceRequest]:
    """Every request of a JSONL trace; blank lines are skipped, arrivals must not go back in time."""
    requests: list[TraceRequest] = []
    for where, data in jsonl_values(path, InvalidTraceError, "trace "):
        request = parse_request(data, where)
        if requests and request.t < requests[-1].t:
            raise InvalidTraceError(f"{where}: t={request.t} comes before the previous line's t={requests[-1].t}; "
                                    "sort the trace by arrival time")
        requests.append(request)
    if not requests:
        raise InvalidTraceError(f"trace {path} holds no requests")
    return requests


def write_trace(path: str | Path, requests: list[TraceRequest]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(r.to_json() + "\n" for r in requests), encoding="utf-8")


# -- synthetic workload -------------------------------------------------------------------

SUBJECTS = (
    "a golden retriever", "a red fox", "an astronaut", "a chef", "a paper boat", "a hummingbird", "a vintage car",
    "a ballerina", "a steam train", "a jellyfish", "a skateboarder", "a hot air balloon", "a samurai", "a robot",
    "a white horse", "a little girl", "an old fisherman", "a dragon", "a sailboat", "a street musician",
    "a panda", "a motorcyclist", "a butterfly", "a lighthouse keeper", "a surfer", "a cat", "a knight",
    "a drone", "a polar bear", "a violinist",
)
ACTIONS = (
    "running", "walking slowly", "dancing", "flying", "drifting", "jumping", "turning around", "playing",
    "looking at the camera", "spinning", "climbing", "resting",
)
SETTINGS = (
    "in a sunlit park", "on a snowy mountain", "in a neon-lit city street at night", "on a tropical beach",
    "in a misty forest", "inside a space station", "in a busy restaurant kitchen", "over a desert canyon at dawn",
    "in the rain", "on a rooftop at sunset", "under the ocean", "in a medieval castle", "in a field of sunflowers",
    "on a frozen lake", "in a cyberpunk market", "in a quiet library", "on a foggy pier", "in a bamboo forest",
    "on mars", "in a snow globe",
)
STYLES = ("", ", cinematic", ", 4k", ", slow motion", ", anime style", ", golden hour lighting", ", drone shot")

DEFAULT_SOURCES = {
    "users": "assumption: requests / 10 (about one session each), enough that topics recombine across them",
    "session_mean": "DiffusionDB sessions mean 13.7 prompts, Midjourney 10.2 (Xie et al., WWW'23): ~12",
    "session_median": "DiffusionDB median 5, Midjourney 4 (Xie et al., WWW'23): 5",
    "edit_share": "assumption: users edit the same prompt repeatedly within a session (Xie et al., WWW'23)",
    "repeat_share": "assumption: exact resubmissions (DiffusionDB has ~8.2 images per prompt)",
    "zipf_exponent": "assumption: a Zipf tail of topic popularity, exponent 1",
    "requests_per_hour": "assumption: sized to the fleet under test",
    "trough_to_peak": "a production video service's daily trough is < half its peak (Runway, 2026): 0.5",
}


@dataclass(frozen=True)
class SyntheticWorkload:
    """Users with sessions of edits over a Zipf-popular topic space, arriving on a diurnal curve."""

    requests: int = 20_000
    users: int | None = None  # default: requests / 10, about one session each
    session_mean: float = 12.0
    session_median: float = 5.0
    edit_share: float = 0.6
    repeat_share: float = 0.1
    zipf_exponent: float = 1.0
    requests_per_hour: float = 600.0
    trough_to_peak: float = 0.5
    tenant: str = "default"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users is None:
            object.__setattr__(self, "users", max(1, self.requests // 10))
        checks = {
            "requests": self.requests >= 1, "users": self.users >= 1,
            "session_median": 1 <= self.session_median <= self.session_mean,
            "edit_share": 0 <= self.edit_share <= 1, "repeat_share": 0 <= self.repeat_share <= 1,
            "edit_share + repeat_share": self.edit_share + self.repeat_share <= 1,
            "zipf_exponent": self.zipf_exponent >= 0, "requests_per_hour": self.requests_per_hour > 0,
            "trough_to_peak": 0 < self.trough_to_peak <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise InvalidTraceError(f"synthetic workload: invalid {', '.join(bad)} (see SyntheticWorkload)")


def _zipf_choice(rng: random.Random, items: tuple[str, ...], exponent: float) -> str:
    weights = [1.0 / (rank + 1) ** exponent for rank in range(len(items))]
    return rng.choices(items, weights=weights)[0]


def _session_length(rng: random.Random, spec: SyntheticWorkload) -> int:
    # Lognormal with the given median and mean: mean = median * exp(sigma^2 / 2).
    sigma = math.sqrt(2 * math.log(spec.session_mean / spec.session_median)) if spec.session_mean > spec.session_median else 0.0
    return max(1, round(rng.lognormvariate(math.log(spec.session_median), sigma)))


def _arrival_times(rng: random.Random, spec: SyntheticWorkload) -> list[float]:
    """A Poisson process whose rate follows one sine wave a day (trough / peak = `trough_to_peak`)."""
    amplitude = (1 - spec.trough_to_peak) / (1 + spec.trough_to_peak)
    peak = spec.requests_per_hour / 3600 * (1 + amplitude)
    times, t = [], 0.0
    while len(times) < spec.requests:  # thinning: draw at the peak rate, keep with rate(t) / peak
        t += rng.expovariate(peak)
        rate = spec.requests_per_hour / 3600 * (1 + amplitude * math.sin(2 * math.pi * t / 86_400))
        if rng.random() * peak <= rate:
            times.append(t)
    return times


def generate_trace(spec: SyntheticWorkload | None = None) -> list[TraceRequest]:
    """A deterministic synthetic trace (same `spec`, same requests)."""
    spec = spec or SyntheticWorkload()
    rng = random.Random(spec.seed)
    times = _arrival_times(rng, spec)
    active: dict[str, tuple[list[str], int]] = {}  # user -> (session prompts, prompts left)
    out: list[TraceRequest] = []
    for t in times:
        user = f"u{rng.randrange(spec.users)}"
        prompts, left = active.get(user, ([], 0))
        if left == 0:
            prompts, left = [], _session_length(rng, spec)
        draw = rng.random()
        if prompts and draw < spec.repeat_share:
            prompt = rng.choice(prompts)
        elif prompts and draw < spec.repeat_share + spec.edit_share:
            prompt = _edit(rng, prompts[-1], spec)
        else:
            prompt = _fresh(rng, spec)
        prompts.append(prompt)
        active[user] = (prompts, left - 1)
        # Users leave the seed to the service (a trace's seed is a user's explicit choice, honoured). The draw
        # stays, unused, so the prompts and times are those of traces generated before.
        rng.randrange(2**31)
        out.append(TraceRequest(round(t, 3), spec.tenant, prompt, user))
    return out


def _fresh(rng: random.Random, spec: SyntheticWorkload) -> str:
    return (f"{_zipf_choice(rng, SUBJECTS, spec.zipf_exponent)} {rng.choice(ACTIONS)} "
            f"{_zipf_choice(rng, SETTINGS, spec.zipf_exponent)}{rng.choice(STYLES)}")


def _edit(rng: random.Random, prompt: str, spec: SyntheticWorkload) -> str:
    """Change one part of an earlier prompt: the subject, the action, the setting or the style."""
    for subject in SUBJECTS:
        if prompt.startswith(subject + " "):
            rest = prompt[len(subject) + 1:]
            break
    else:
        return _fresh(rng, spec)
    action = next((a for a in ACTIONS if rest.startswith(a + " ")), None)
    setting = next((s for s in SETTINGS if s in rest), None)
    style = rest[rest.index(setting) + len(setting):] if setting else ""
    if action is None or setting is None:
        return _fresh(rng, spec)
    part = rng.choice(("subject", "action", "setting", "style"))
    if part == "subject":
        subject = _zipf_choice(rng, SUBJECTS, spec.zipf_exponent)
    elif part == "action":
        action = rng.choice(ACTIONS)
    elif part == "setting":
        setting = _zipf_choice(rng, SETTINGS, spec.zipf_exponent)
    else:
        style = rng.choice(STYLES)
    return f"{subject} {action} {setting}{style}"


def near_duplicate_share(prompts: list[str], embedder, threshold: float = 0.9) -> float:
    """Share of a trace's unique prompts that have another unique prompt at cosine >= `threshold`.

    The public calibration points count it the same way: about 38 % for
    VidProM and 59 % for DiffusionDB (unique vs semantically unique prompts;
    their own similarity criterion, not necessarily this threshold).
    """
    unique = sorted(set(prompts))
    if len(unique) < 2:
        return 0.0
    import torch

    vectors = embedder.embed(unique).cpu()
    found = 0
    for start in range(0, len(unique), 2048):  # row blocks: a 20,000-prompt trace's full matrix is 1.6 GB
        cosines = vectors[start:start + 2048] @ vectors.T
        cosines[torch.arange(cosines.shape[0]), torch.arange(start, start + cosines.shape[0])] = -1.0
        found += int((cosines.max(dim=1).values >= threshold).sum())
    return found / len(unique)
