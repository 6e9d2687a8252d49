"""Nexus (database `nexus`): routes llm_requests to providers, holds approvals and questions for people,
and serves the web page (sign-in, approvals, questions, the operations console, /metrics)."""
