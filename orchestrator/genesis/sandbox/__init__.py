"""The code sandbox of Genesis: bubblewrap + rlimits + a cgroup + a seccomp filter + an unprivileged uid per job."""

from orchestrator.genesis.sandbox.languages import MODES, PACKAGES, Unsupported, installed
from orchestrator.genesis.sandbox.limits import DEFAULTS, Limits, resolve_local
from orchestrator.genesis.sandbox.runner import (
           UNSAFE_WARNING,
           Sandbox,
           SandboxUnavailable,
           Slot,
           SlotsBusy,
           confinement_report,
)

__all__ = ["DEFAULTS", "MODES", "PACKAGES", "UNSAFE_WARNING", "Limits", "Sandbox", "SandboxUnavailable", "Slot",
           "SlotsBusy", "Unsupported", "confinement_report", "installed", "resolve_local"]
