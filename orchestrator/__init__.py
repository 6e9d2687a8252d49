"""Thin Python orchestrator for a Postgres-centric agent backbone."""

__version__ = "0.1.0"
