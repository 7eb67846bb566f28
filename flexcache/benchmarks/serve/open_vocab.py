"""The open-vocabulary serving workload: prompts as users of a text-to-video service write them.

`generate_open_vocabulary_trace` draws a trace whose prompt space has no
finite head. Subjects, actions, settings, camera moves, styles and lighting
come from large word lists (`open_vocab_words`, `open_vocab_languages`),
each drawn with a Zipf law and combined freely (`open_vocab_scenes`), so new
combinations keep appearing as a trace grows. On top of that:

- free-form prompts: long descriptions, run-on sentences, casual requests
  ("pls make ..."), two-word prompts; per-user habits (lowercase, consistent
  typos, emoji now and then);
- seven other languages at small shares, written natively;
- trending prompts: born at a moment, copied verbatim or lightly tweaked by
  many users while they are hot (bursts), then fading;
- rare one-off ideas: surreal mixes, invented names and brands;
- sessions of edits: restyle, new action, new setting, new subject, small
  wording changes, exact resubmissions and going back to an earlier version;
- many users with long-tailed activity, ~10 % of requests with a pinned
  seed, session starts on a diurnal curve.

The near-duplicate knob. `near_duplicate_share` is the share of a trace's
unique prompts that have another unique prompt at cosine >= 0.9 under the
cache's default embedder (`workload.near_duplicate_share`, what `bench
serve` reports). The generator reaches it through one internal number, the
edit closeness of `FOLLOW_UP_MIX`: at 0 a session's follow-ups are new ideas
and rewrites (several big edits at once), at 1 small edits (wording, a tag,
the camera, the lighting); big single edits (style, action, setting,
subject), resubmissions and trend copies stay at their shares throughout.
`SHARE_CALIBRATION` maps the knob to the closeness: measured with the
default (multilingual USE) embedder on 3,000-request traces, seeds 0 and 1,
closeness 0 / 0.15 / 0.3 / 0.5 / 0.75 / 1 giving 0.195 / 0.349 / 0.477 /
0.612 / 0.765 / 0.924. Checked on held-out seeds 2 and 3 (3,000 requests,
`bench/e2e/open_vocab_share.py`, 2-core CPU), asked for -> measured:
0.25 -> 0.215 and 0.244, 0.38 -> 0.379 and 0.369, 0.59 -> 0.619 and 0.588.
One seed differs from the next by up to ~0.07 at 3,000 requests (a few
long sessions weigh a lot).

The default, 0.38, is VidProM's figure: VidProM is a log of text-to-video
prompts (Pika's Discord), DiffusionDB's 59 % is of text-to-image prompts,
where a generation costs seconds and users iterate far more per idea.
Both counts are the papers' own (unique against semantically unique
prompts, their embedder and criterion). The share holds as a trace grows:
0.381 at 6,000 requests (seed 0, the default knob).

Every default has its source in `OPEN_VOCABULARY_SOURCES`; the ones no
public figure pins down are marked "assumption".
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import zlib
from dataclasses import asdict, dataclass
from typing import Any

from flexcache.benchmarks.serve.open_vocab_languages import LANGUAGES
from flexcache.benchmarks.serve.open_vocab_scenes import Persona, Scene, SceneWriter
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.core import TENANT_PATTERN, InvalidTraceError

DEFAULT_NEAR_DUPLICATE_SHARE = 0.38
# (near-duplicate share measured, edit closeness of `FOLLOW_UP_MIX`), ascending.
# Each share the mean of seeds 0 and 1 at 3,000 requests (bench/e2e/open_vocab_share.py; 2-core CPU).
SHARE_CALIBRATION = ((0.195, 0.0), (0.349, 0.15), (0.477, 0.3), (0.612, 0.5), (0.765, 0.75), (0.924, 1.0))
DEFAULT_LANGUAGE_SHARES = (("zh", 0.03), ("es", 0.015), ("ja", 0.012), ("pt", 0.01), ("fr", 0.01), ("de", 0.01),
                           ("ko", 0.008))

OPEN_VOCABULARY_SOURCES = {
    "users": "assumption: requests / 10, as the topics workload; activity lognormal (sigma 1.5): a few heavy "
             "users, many who come once",
    "near_duplicate_share": "VidProM (text-to-video, Wang & Yang 2024): ~38 % of unique prompts have a semantic "
                            "near-duplicate (DiffusionDB, text-to-image: ~59 %)",
    "session_mean": "DiffusionDB sessions mean 13.7 prompts, Midjourney 10.2 (Xie et al., WWW'23): ~12",
    "session_median": "DiffusionDB median 5, Midjourney 4 (Xie et al., WWW'23): 5",
    "repeat_share": "assumption: 1 follow-up in 10 resubmits a prompt unchanged (a re-roll; 1 in 5 of those "
                    "goes back to an earlier version), as the topics workload",
    "free_form_share": "assumption: 3 new ideas in 10 are written as sentences, the rest as tag lists, casual "
                       "requests or a few words (both styles dominate DiffusionDB, Wang et al. 2022)",
    "rare_idea_share": "assumption: 1 new idea in 20 is an odd one-off (surreal mixes, names, brands)",
    "trending_share": "assumption: 1 new idea in 10 copies a trending prompt (public galleries and Discord "
                      "channels show others' prompts; VidProM comes from one)",
    "trends_per_1k_requests": "assumption: 2 new trends per 1,000 requests of traffic",
    "trend_half_life_requests": "assumption: a trend's pull halves every 300 requests of traffic (hours on a "
                                "busy service); appeal Pareto(1.2), so a few trends take most copies",
    "language_shares": "assumption: English dominates public prompt logs (VidProM, DiffusionDB); ~10 % of "
                       "users write in another language, Chinese first",
    "pinned_seed_share": "assumption: ~10 % of requests pin a seed (sessions that pin keep it while editing); "
                         "services draw it otherwise",
    "zipf_exponent": "assumption: word popularity follows Zipf's law, exponent 1 (Zipf 1949)",
    "render_seconds": "assumption: users wait for a video before editing it; bench serve sets the profile's "
                      "full run time",
    "think_seconds": "assumption: median 45 s to watch and type (lognormal); 1 follow-up in 4 is queued "
                     "without waiting for the video",
    "requests_per_hour": "assumption: sized to the fleet under test",
    "trough_to_peak": "a production video service's daily trough is < half its peak (Runway, 2026): 0.5",
}


@dataclass(frozen=True)
class OpenVocabularyWorkload:
    """The open-vocabulary workload's parameters (sources: `OPEN_VOCABULARY_SOURCES`).

    Example:
        >>> trace = generate_open_vocabulary_trace(OpenVocabularyWorkload(requests=100, seed=1))
        >>> len(trace), trace[0].tenant
        (100, 'default')

    Raises:
        InvalidTraceError: a parameter out of its range; the message names it.
    """

    requests: int = 20_000
    users: int | None = None  # default: requests / 10
    near_duplicate_share: float = DEFAULT_NEAR_DUPLICATE_SHARE
    session_mean: float = 12.0
    session_median: float = 5.0
    repeat_share: float = 0.1
    free_form_share: float = 0.3
    rare_idea_share: float = 0.05
    trending_share: float = 0.1
    trends_per_1k_requests: float = 2.0
    trend_half_life_requests: float = 300.0
    language_shares: tuple[tuple[str, float], ...] = DEFAULT_LANGUAGE_SHARES
    pinned_seed_share: float = 0.1
    zipf_exponent: float = 1.0
    render_seconds: float = 120.0
    think_seconds: float = 45.0
    requests_per_hour: float = 600.0
    trough_to_peak: float = 0.5
    tenant: str = "default"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users is None and _is_int(self.requests):
            object.__setattr__(self, "users", max(1, self.requests // 10))
        low, high = SHARE_CALIBRATION[0][0], SHARE_CALIBRATION[-1][0]
        shares = self.language_shares
        rules = (
            ("requests", _is_int(self.requests) and self.requests >= 1, "an integer >= 1"),
            ("users", _is_int(self.users) and self.users >= 1, "an integer >= 1"),
            ("seed", _is_int(self.seed), "an integer"),
            ("near_duplicate_share", _number(self.near_duplicate_share, low, high),
             f"within [{low}, {high}], the range the generator reaches (SHARE_CALIBRATION)"),
            ("session_median", _number(self.session_median, 1, math.inf), ">= 1"),
            ("session_mean", _number(self.session_mean, 1, math.inf)
             and self.session_mean >= self.session_median, ">= session_median"),
            *((name, _number(getattr(self, name), 0, 1), "within [0, 1]")
              for name in ("repeat_share", "free_form_share", "rare_idea_share", "trending_share",
                           "pinned_seed_share")),
            ("rare_idea_share + trending_share", self.rare_idea_share + self.trending_share <= 1, "<= 1"),
            *((name, _number(getattr(self, name), 0, math.inf), ">= 0")
              for name in ("trends_per_1k_requests", "zipf_exponent", "render_seconds", "think_seconds")),
            *((name, _number(getattr(self, name), 0, math.inf) and getattr(self, name) > 0, "> 0")
              for name in ("trend_half_life_requests", "requests_per_hour")),
            ("trough_to_peak", _number(self.trough_to_peak, 0, 1) and self.trough_to_peak > 0, "within (0, 1]"),
            ("language_shares", isinstance(shares, tuple) and all(
                isinstance(pair, tuple) and len(pair) == 2 and pair[0] in LANGUAGES and _number(pair[1], 0, 1)
                for pair in shares) and sum(share for _, share in shares) <= 1,
             f"a tuple of (language, share) pairs, languages among {', '.join(LANGUAGES)}, shares summing to <= 1"),
            ("tenant", isinstance(self.tenant, str) and TENANT_PATTERN.fullmatch(self.tenant) is not None,
             "1-64 characters of [A-Za-z0-9_-]"),
        )
        for name, ok, rule in rules:
            if not ok:
                value = getattr(self, name, None) if "+" not in name else None
                raise InvalidTraceError(f"open-vocabulary workload: {name} must be {rule}"
                                        + (f"; got {value!r}" if value is not None else ""))

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready data (the bench's `workload.parameters`)."""
        return asdict(self) | {"language_shares": dict(self.language_shares)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def closeness_for_share(share: float) -> float:
    """The edit closeness (`FOLLOW_UP_MIX`) that gives `share` near-duplicates, by `SHARE_CALIBRATION`."""
    points = SHARE_CALIBRATION
    index = min(max(bisect.bisect_left([p[0] for p in points], share), 1), len(points) - 1)
    (s0, c0), (s1, c1) = points[index - 1], points[index]
    return min(1.0, max(0.0, c0 + (c1 - c0) * (share - s0) / (s1 - s0)))


def generate_open_vocabulary_trace(spec: OpenVocabularyWorkload | None = None, *,
                                   edit_closeness: float | None = None) -> list[TraceRequest]:
    """A deterministic open-vocabulary trace (same `spec`, same requests), ordered by arrival.

    Args:
        spec: the workload (default: `OpenVocabularyWorkload()`).
        edit_closeness: tuning only: the generator's follow-up mix (`FOLLOW_UP_MIX`), 0 to 1, instead
            of the one `SHARE_CALIBRATION` gives for `spec.near_duplicate_share`.

    Example:
        >>> spec = OpenVocabularyWorkload(requests=50, seed=3)
        >>> generate_open_vocabulary_trace(spec) == generate_open_vocabulary_trace(spec)
        True
    """
    spec = spec or OpenVocabularyWorkload()
    if edit_closeness is None:
        edit_closeness = closeness_for_share(spec.near_duplicate_share)
    elif not _number(edit_closeness, 0, 1):
        raise InvalidTraceError(f"edit_closeness must be within [0, 1]; got {edit_closeness!r}")
    return _Generator(spec, edit_closeness).run()


# -- the generator: who sends what, when ------------------------------------------------------

@dataclass
class _Session:
    persona: Persona
    left: int
    seed: int | None
    scene: Scene | None = None
    history: list[str] | None = None


@dataclass
class _Trend:
    scene: Scene
    text: str
    seed: int | None
    born: float
    appeal: float


PERSONA_FORMS = ((0.55, 0.95, 1.0), (0.1, 0.7, 1.0), (0.05, 0.2, 1.0))  # terse, casual, tag-list writers
FAVOURITE_SEEDS = (42, 1234, 0, 1, 7, 69, 777, 1337, 2024, 12345, 31337, 99999)
# What a session's follow-up (one that is not a resubmission) does, at edit closeness 0 and at 1 (linear
# between): a new idea; a rewrite (2-3 big edits at once); a big edit (style, action, setting, subject); a
# small edit (wording, a tag, the camera, the lighting). `SHARE_CALIBRATION` maps the knob to the closeness.
FOLLOW_UP_MIX = {"new idea": (0.6, 0.0), "rewrite": (0.25, 0.0), "big edit": (0.15, 0.15), "small edit": (0.0, 0.85)}
WAIT_FOR_VIDEO = 0.75  # share of follow-ups sent after the previous video came back (see think_seconds)
TREND_TWEAK = 0.3  # share of trend copies edited before sending


class _Generator:
    def __init__(self, spec: OpenVocabularyWorkload, closeness: float) -> None:
        self.spec, self.closeness = spec, closeness
        self.rng = random.Random(spec.seed)
        self.writer = SceneWriter(self.rng, spec.zipf_exponent)
        activity = [self.rng.lognormvariate(0.0, 1.5) for _ in range(spec.users)]
        self.user_cumulative = list(_accumulate(activity))
        self.personas: dict[int, Persona] = {}
        self.trends: list[_Trend] = []
        seconds_per_request = 3600.0 / spec.requests_per_hour
        self.trend_half_life_s = spec.trend_half_life_requests * seconds_per_request
        self.trend_rate = spec.trends_per_1k_requests / 1000 / seconds_per_request
        self.next_trend_at = -4 * self.trend_half_life_s  # trends already hot when the trace starts

    # -- time, users, sessions

    def run(self) -> list[TraceRequest]:
        spec, rng = self.spec, self.rng
        out: list[TraceRequest] = []
        waiting: list[tuple[float, int, _Session]] = []  # (next request time, order, session)
        # Sessions start a while before 0, so the trace opens in steady state (its rate from the first
        # hour, some sessions half way through); their requests before 0 are generated and dropped.
        think_mean = spec.think_seconds * math.exp(0.8**2 / 2)
        warm_up = 3 * spec.session_mean * (think_mean + WAIT_FOR_VIDEO * spec.render_seconds)
        self.next_trend_at -= warm_up
        next_start, order = self._session_start_after(-warm_up), 0
        while len(out) < spec.requests:
            if waiting and waiting[0][0] <= next_start:
                t, _, session = heapq.heappop(waiting)
            else:
                t, session = next_start, self._new_session()
                next_start = self._session_start_after(t)
            self._spawn_trends(t)
            prompt = self._next_prompt(session, t)
            session.history.append(prompt)
            if t >= 0:
                out.append(TraceRequest(round(t, 3), spec.tenant, prompt, session.persona.name, session.seed))
            session.left -= 1
            if session.left > 0:
                gap = rng.lognormvariate(math.log(spec.think_seconds or 1e-3), 0.8)
                if rng.random() < WAIT_FOR_VIDEO:
                    gap += spec.render_seconds
                order += 1
                heapq.heappush(waiting, (t + gap, order, session))
        return out

    def _session_start_after(self, t: float) -> float:
        """Thinning of a Poisson process of sessions whose rate follows one sine wave a day."""
        spec, rng = self.spec, self.rng
        base = spec.requests_per_hour / 3600 / spec.session_mean
        amplitude = (1 - spec.trough_to_peak) / (1 + spec.trough_to_peak)
        while True:
            t += rng.expovariate(base * (1 + amplitude))
            if rng.random() * (1 + amplitude) <= 1 + amplitude * math.sin(2 * math.pi * t / 86_400):
                return t

    def _new_session(self) -> _Session:
        spec, rng = self.spec, self.rng
        index = bisect.bisect_right(self.user_cumulative, rng.random() * self.user_cumulative[-1])
        persona = self.personas.get(index) or self._persona(index)
        sigma = math.sqrt(2 * math.log(spec.session_mean / spec.session_median)) \
            if spec.session_mean > spec.session_median else 0.0
        length = max(1, round(rng.lognormvariate(math.log(spec.session_median), sigma)))
        seed = None
        if rng.random() < spec.pinned_seed_share:
            seed = rng.choice(FAVOURITE_SEEDS) if rng.random() < 0.4 else rng.randrange(2**31)
        return _Session(persona, length, seed, history=[])

    def _persona(self, index: int) -> Persona:
        """A user's writing habits, from the user's own stream: the same whatever the order users appear in."""
        rng = random.Random(zlib.crc32(f"{self.spec.seed}:{index}".encode()))
        language, draw = "en", rng.random()
        for code, share in self.spec.language_shares:
            if draw < share:
                language = code
                break
            draw -= share
        persona = Persona(f"u{index}", language, rng.choices(PERSONA_FORMS, weights=(2, 5, 3))[0],
                           rng.random() < 0.45, rng.uniform(0.02, 0.1) if rng.random() < 0.15 else 0.0,
                           0.3 if rng.random() < 0.06 else 0.0)
        self.personas[index] = persona
        return persona

    # -- what each request says

    def _next_prompt(self, session: _Session, t: float) -> str:
        rng, history = self.rng, session.history
        if not history:
            return self._new_idea(session, t)
        if rng.random() < self.spec.repeat_share:
            return rng.choice(history[:-1]) if len(history) > 1 and rng.random() < 0.2 else history[-1]
        draw, follow_up = rng.random(), "small edit"
        for follow_up, (at_0, at_1) in FOLLOW_UP_MIX.items():
            draw -= at_0 + (at_1 - at_0) * self.closeness
            if draw < 0:
                break
        if follow_up == "new idea":
            return self._new_idea(session, t)
        scene = session.scene
        for _ in range(rng.randint(2, 3) if follow_up == "rewrite" else 1):
            scene = self.writer.edit(scene, major=follow_up != "small edit")
        session.scene = scene
        return self.writer.render(scene, session.persona)

    def _new_idea(self, session: _Session, t: float) -> str:
        spec, rng, persona = self.spec, self.rng, session.persona
        draw = rng.random()
        if draw < spec.trending_share:
            trend = self._pick_trend(t)
            if trend is not None:
                if session.seed is not None and trend.seed is not None:
                    session.seed = trend.seed  # a remix keeps the seed the trend was posted with
                session.scene = trend.scene
                if rng.random() >= TREND_TWEAK:
                    return trend.text
                session.scene = self.writer.edit(trend.scene, major=rng.random() >= self.closeness)
                return self.writer.render(session.scene, persona)
        if persona.language != "en":
            session.scene = self.writer.foreign_scene(persona.language)
        elif spec.trending_share <= draw < spec.trending_share + spec.rare_idea_share:
            session.scene = self.writer.rare_scene()
        else:
            form = "prose" if rng.random() < spec.free_form_share else \
                ("short", "casual", "tags")[bisect.bisect_right(persona.forms, rng.random())]
            session.scene = self.writer.english_scene(form)
        return self.writer.render(session.scene, persona)

    def _spawn_trends(self, t: float) -> None:
        rng = self.rng
        while self.next_trend_at <= t and self.trend_rate > 0:
            draw = rng.random()
            scene = (self.writer.foreign_scene(rng.choice(list(LANGUAGES))) if draw < 0.1 else self.writer.rare_scene()
                     if draw < 0.2 else self.writer.english_scene(rng.choice(("tags", "prose")), rich=True))
            scene.pasted = True
            seed = rng.randrange(2**31) if rng.random() < 0.5 else None
            self.trends.append(_Trend(scene, self.writer.render(scene, None), seed, self.next_trend_at,
                                      rng.paretovariate(1.2)))
            self.next_trend_at += rng.expovariate(self.trend_rate)

    def _pick_trend(self, t: float) -> _Trend | None:
        horizon = 12 * self.trend_half_life_s
        self.trends = [trend for trend in self.trends if t - trend.born < horizon]
        if not self.trends:
            return None
        pulls = list(_accumulate(trend.appeal * 0.5 ** ((t - trend.born) / self.trend_half_life_s)
                                 for trend in self.trends))
        return self.trends[bisect.bisect_right(pulls, self.rng.random() * pulls[-1])]


def _accumulate(values):
    total = 0.0
    for value in values:
        total += value
        yield total
