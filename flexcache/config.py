"""Configuration dataclasses (public path; defined in `flexcache.core.config`)."""

from flexcache.core.config import *  # noqa: F401,F403
from flexcache.core.config import __all__  # noqa: F401
