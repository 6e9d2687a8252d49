"""The code sandbox of Genesis: bubblewrap + rlimits + an unprivileged uid per job."""

from .languages import MODES, Unsupported
from .limits import DEFAULTS, Limits, resolve_local
from .runner import UNSAFE_WARNING, Sandbox, SandboxUnavailable, sandbox_kind

__all__ = ["DEFAULTS", "MODES", "UNSAFE_WARNING", "Limits", "Sandbox", "SandboxUnavailable", "Unsupported",
           "resolve_local", "sandbox_kind"]
