"""The NATS bridge (seed 001, "Migration from NATS"): agents still on NATS reach the bus through it, and
its replies go back over NATS, until the migration's phase 3 retires NATS (docs/nats.md)."""
