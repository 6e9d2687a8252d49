"""The HITL web page (Starlette + Jinja2, server-rendered): approvals, questions, dashboard, /metrics."""
