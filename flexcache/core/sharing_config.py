"""The ``sharing`` section of a `CacheConfig`: tenants, pools and the cross-user defences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flexcache.core.sections import build_section
from flexcache.core.sections import require as _require
from flexcache.core.types import TENANT_PATTERN


@dataclass(frozen=True)
class PoolConfig:
    """Tenants whose users see each other's entries (one index partition).

    Args:
        name: the pool's name (the tenant pattern: 1-64 of [A-Za-z0-9_-]).
        tenants: the tenants sharing it, each declared in `sharing.tenants`.
    """

    name: str
    tenants: tuple[str, ...]


@dataclass(frozen=True)
class SharingConfig:
    """Who may reuse whose entries, and the defences of shared caches (README, "Threat model").

    Every request carries a user id (default: its tenant). Users of one
    tenant, and the tenants of one pool, share entries; an entry's writer is
    recorded, and reuse by anyone else passes these defences.

    Args:
        tenants: the tenants this cache serves; empty: any tenant name (each
            its own namespace). When given, another tenant is refused.
        pools: `PoolConfig` mappings (``{name: public, tenants: [a, b]}``);
            a tenant belongs to at most one pool.
        min_askers: an entry serves a user other than its writer only once this
            many distinct users other than its writer (the requester included)
            asked for what that hit reuses: the whole prompt for a whole-latent
            hit, the kept part (object or background) for a region hit. A user
            asks when its request would reuse it undefended. 1 turns it off.
            Against prompt stealing and covert channels: an attacker, or
            colluders, with up to ``min_askers - 1`` identities never get another
            user's entry on their own asking (README, "Threat model").
        cross_user_max_fraction: the deepest skip (fraction of N) another user
            may take from an entry whose content is not known to follow its text
            (``insert(..., text_conditioned=False)``: caller-supplied embeddings,
            images or adapters; entries of earlier versions) until it is vouched
            for; 1.0 turns it off. At 0.1 a marker planted in an entry is
            regenerated on the toy world (poisoning). Text-conditioned entries
            follow the planner's rules.
        vouches_required: such an entry is vouched for (served to others without
            the cap) once this many distinct other users, resumed from it at
            the cap with a near-duplicate prompt, ran into latents that agree
            with its own, net of those that disagreed; 0: never (always capped).
        near_duplicate: the full-prompt cosine from which a run resumed from
            another user's capped entry may vouch (or not) for it (the toy
            world's near-duplicate row of ``planner.similarity_table``).
        vouch_max_distance: agreement is a relative L2 distance between the
            reader's latent and the entry's at their deepest common checkpoint
            at most this much, scaled by that step / (N / 2). Toy world (20
            steps, x_10): honest near-duplicates 0.03-0.16, a planted motion
            or colour 0.29-0.54.
        containment_gate: a hit from another user's entry whose text (for a
            region hit: the kept part's text) holds a content word the request's
            does not ask for (`engine.containment`) resumes no deeper than
            ``cross_user_max_fraction``, so what the request did not ask for is
            regenerated (poisoning by a near-duplicate prompt that adds content).
        gate_word_similarity: a source word counts as asked for when the request
            holds it, or a word whose embedding is at least this cosine from it
            (the embedder's, word by word).
        trusted_writers: identities ``tenant/user`` (or ``tenant``: its default
            user) whose entries serve every user of their namespace at the rules'
            depth with no defence between: the service's own warm-up runs
            (``flexcache warm``), first-party users. Each tenant must be declared
            in ``tenants``.
        user_max_entries: entries one user may hold in a namespace; further
            inserts are refused (counted); 0: no quota.
        user_inserts_per_minute: runs per user per minute whose checkpoints
            are stored; 0: no limit.
        randomize_within: among candidates at the best step whose cosine is
            within this of the best, pick one at random; 0: the best.
        latency_padding: pipeline calls served from another user's entry
            return no sooner than a full run of their signature has (the mean of
            this process's full runs); the pipeline is free for other calls
            meanwhile. Own hits are not padded (they reveal nothing).
    """

    tenants: tuple[str, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    min_askers: int = 3
    cross_user_max_fraction: float = 0.1
    vouches_required: int = 2
    near_duplicate: float = 0.89
    vouch_max_distance: float = 0.2
    containment_gate: bool = True
    gate_word_similarity: float = 0.8
    trusted_writers: tuple[str, ...] = ()
    user_max_entries: int = 0
    user_inserts_per_minute: int = 0
    randomize_within: float = 0.0
    latency_padding: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "pools", tuple(
            p if isinstance(p, PoolConfig) else build_section(PoolConfig, p, "sharing.pools[].") for p in self.pools))
        names = [*self.tenants, *(p.name for p in self.pools)]
        bad = [n for n in names + [t for p in self.pools for t in p.tenants]
               if not isinstance(n, str) or TENANT_PATTERN.fullmatch(n) is None]
        _require(not bad, f"sharing: tenant and pool names are 1-64 characters of [A-Za-z0-9_-]; got {bad}")
        _require(len(set(self.tenants)) == len(self.tenants), f"sharing.tenants names a tenant twice: {list(self.tenants)}")
        pool_names = [p.name for p in self.pools]
        _require(len(set(pool_names)) == len(pool_names), f"sharing.pools names a pool twice: {pool_names}")
        seen: dict[str, str] = {}
        for pool in self.pools:
            _require(len(pool.tenants) >= 1, f"sharing.pools: pool {pool.name!r} names no tenants")
            unknown = [t for t in pool.tenants if t not in self.tenants]
            _require(not unknown, f"sharing.pools: pool {pool.name!r} names unknown tenant(s) {unknown}; "
                     f"declare them in sharing.tenants (now {list(self.tenants)})")
            for tenant in pool.tenants:
                _require(tenant not in seen, f"sharing.pools: tenant {tenant!r} is in pools {seen.get(tenant)!r} "
                         f"and {pool.name!r}; a tenant belongs to one pool")
                seen[tenant] = pool.name
        object.__setattr__(self, "trusted_writers", tuple(self.trusted_writers))
        for writer in self.trusted_writers:
            tenant, slash, user = writer.partition("/") if isinstance(writer, str) else ("", "", "")
            _require(TENANT_PATTERN.fullmatch(tenant) is not None
                     and (not slash or TENANT_PATTERN.fullmatch(user) is not None),
                     f"sharing.trusted_writers: {writer!r} is not 'tenant/user' or 'tenant' "
                     "(1-64 characters of [A-Za-z0-9_-] each)")
            _require(tenant in self.tenants, f"sharing.trusted_writers: {writer!r} names tenant {tenant!r}, which "
                     f"is not declared in sharing.tenants (now {list(self.tenants)}); declare it there")
        _require(0.0 < self.gate_word_similarity <= 1.0,
                 f"sharing.gate_word_similarity must be a cosine in (0, 1]; got {self.gate_word_similarity}")
        _require(self.min_askers >= 1, f"sharing.min_askers must be >= 1; got {self.min_askers}")
        _require(0.0 < self.cross_user_max_fraction <= 1.0,
                 f"sharing.cross_user_max_fraction must be in (0, 1]; got {self.cross_user_max_fraction}")
        _require(self.vouches_required >= 0, f"sharing.vouches_required must be >= 0; got {self.vouches_required}")
        _require(-1.0 <= self.near_duplicate <= 1.0,
                 f"sharing.near_duplicate must be a cosine in [-1, 1]; got {self.near_duplicate}")
        _require(self.vouch_max_distance > 0, f"sharing.vouch_max_distance must be > 0; got {self.vouch_max_distance}")
        _require(self.user_max_entries >= 0, f"sharing.user_max_entries must be >= 0; got {self.user_max_entries}")
        _require(self.user_inserts_per_minute >= 0,
                 f"sharing.user_inserts_per_minute must be >= 0; got {self.user_inserts_per_minute}")
        _require(0.0 <= self.randomize_within <= 2.0,
                 f"sharing.randomize_within must be in [0, 2]; got {self.randomize_within}")

    @classmethod
    def undefended(cls, **settings: Any) -> "SharingConfig":
        """Every defence off (a cache shared as NIRVANA shares it); for benchmarks and attack baselines."""
        return cls(**{"min_askers": 1, "cross_user_max_fraction": 1.0, "containment_gate": False,
                      "latency_padding": False, **settings})

    def trusted_identities(self) -> frozenset[str]:
        """`trusted_writers` as ``tenant/user`` identities (a bare tenant: its default user)."""
        return frozenset(w if "/" in w else f"{w}/{w}" for w in self.trusted_writers)
