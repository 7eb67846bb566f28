"""The errors FlexCache raises (public path; defined in `flexcache.core.errors`)."""

from flexcache.core.errors import *  # noqa: F401,F403
from flexcache.core.errors import __all__  # noqa: F401
