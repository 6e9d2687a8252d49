"""Workers run by `orchestrator daemon`: each module defines one worker kind and registers it here."""

from __future__ import annotations

from collections.abc import Callable

# name -> factory(settings) returning a daemon.Worker; modules add themselves on import.
REGISTRY: dict[str, Callable] = {}


def register(name: str):
    def deco(factory: Callable) -> Callable:
        REGISTRY[name] = factory
        return factory

    return deco


def load_all() -> dict[str, Callable]:
    from . import alerts, centralcloud, genesis, heartbeat, hitl, nexus  # noqa: F401

    return REGISTRY
