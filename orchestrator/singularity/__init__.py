"""Singularity (database `singularity`, `singularity_<id>` per instance): agents' requests and results
(AgentClient), instances, and the autonomous jobs' CLI. Its behaviour lives in sql/procedures/singularity/."""
