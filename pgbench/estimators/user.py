"""User-defined estimators (filled in below the registry)."""
from __future__ import annotations

USER_ESTIMATORS: dict = {}


class UserSpec:  # placeholder type, replaced by the plug-in implementation
    pass
