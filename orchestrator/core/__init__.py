"""The shared core over the infrastructure: the bus client, message rules, wake-ups, the daemon's
supervisor, heartbeats and alerts. Services build on it; it knows no service."""
