"""The layer language (frontend): trace Python layer functions into level-1 IR."""

from pigeon.frontend.lang import *  # noqa: F401,F403
from pigeon.frontend.lang import __all__  # noqa: F401
