"""Typed errors raised by FlexCache.

Every error a caller can act on is a `FlexCacheError`; the subclasses say what
went wrong and their messages say what to do. Messages never include tensor
contents, only shapes, dtypes and names.
"""

from __future__ import annotations


class FlexCacheError(Exception):
    """Base class of every error FlexCache raises on purpose."""


class ConfigError(FlexCacheError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class InvalidPromptError(FlexCacheError, ValueError):
    """A prompt is empty, not a string, or otherwise unusable as a cache key."""


class InvalidLatentError(FlexCacheError, ValueError):
    """A latent offered to the cache has the wrong shape or dtype, or non-finite values."""


class InvalidPlanError(FlexCacheError, ValueError):
    """A plan was used for something it cannot do (for example inserting from a hit plan)."""


class CapacityError(FlexCacheError):
    """An entry does not fit in the store even when it is empty."""


class CorruptBlobError(FlexCacheError):
    """A stored blob failed its checksum or could not be parsed; the entry is treated as a miss."""


class TierUnavailableError(FlexCacheError):
    """A storage tier cannot serve right now (server down, disk full); the store skips it."""


class UnsupportedPipelineError(FlexCacheError, TypeError):
    """`enable_flexcache` was given a pipeline class it has no adapter for."""


class BackendUnavailableError(FlexCacheError, ImportError):
    """An optional backend (faiss, CUDA, Triton, nvCOMP) was requested but cannot be loaded."""


class InvalidTraceError(FlexCacheError, ValueError):
    """A request trace (JSONL) line that is not a valid request."""


class InvalidDeviceError(FlexCacheError, ValueError):
    """A ``device=`` names no device this machine has: malformed, CUDA where there is none, a GPU index too high."""


class DirectoryInUseError(ConfigError):
    """A disk tier's directory is held by another disk tier, in this process or another: one per directory."""


class UncacheableCallError(FlexCacheError):
    """A pipeline call FlexCache cannot key (an argument it cannot digest): the call runs uncached, this message
    its ``bypass_reason``. Raised by adapters; never reaches the caller of a pipeline."""


class RulesFileError(ConfigError):
    """A calibrated rules file (``planner.rules_file``) is missing, truncated, edited after it was written,
    or of an unknown format: recalibrate (`flexcache calibrate`) or restore the file."""


class RulesSignatureError(ConfigError):
    """A calibrated rules file was made for another model or other generation settings than the
    pipeline it is offered to; its depths are never served there."""


class ScorerError(FlexCacheError):
    """A quality scorer could not score a video (an unreadable prompt, a non-finite score, a model
    that fails to load)."""


class CalibrationError(FlexCacheError):
    """Calibration cannot run as asked (too few prompts for the budget, a scorer that failed on a
    pair); saved progress is kept."""


__all__ = [
    "FlexCacheError",
    "ConfigError",
    "InvalidPromptError",
    "InvalidLatentError",
    "InvalidPlanError",
    "CapacityError",
    "CorruptBlobError",
    "TierUnavailableError",
    "UnsupportedPipelineError",
    "BackendUnavailableError",
    "InvalidTraceError",
    "InvalidDeviceError",
    "DirectoryInUseError",
    "UncacheableCallError",
    "RulesFileError",
    "RulesSignatureError",
    "ScorerError",
    "CalibrationError",
]
