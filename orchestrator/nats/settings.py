"""The NATS bridge's settings, read once from the environment (NATS_*), checked, with the fix when wrong.

With NATS_URL unset nothing runs and nothing depends on NATS. The phase is not a setting: it is data in
shared_queue (nats.state), written by `orchestrator nats phase N`, so every bridge sees the same one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.infra.settings import Env, SettingError

BRIDGED = ("llm_requests", "approval_requests", "question_requests", "job_requests")
SUBJECT_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
STREAM_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True)
class NatsSettings:
    url: str | None              # NATS_URL: the NATS server(s), comma-separated; unset: no bridge
    mode: str                    # NATS_MODE: core (at-most-once) or jetstream (stored, acked after the pgmq commit)
    stream: str                  # NATS_STREAM: the JetStream stream holding the request subjects (jetstream mode)
    subjects: dict[str, str]     # NATS_SUBJECT_<QUEUE>: the subject agents send each queue's requests to

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def queue_of(self, subject: str) -> str:
        return {v: k for k, v in self.subjects.items()}[subject]

    @classmethod
    def from_env(cls, env=None) -> NatsSettings:
        e = Env(env)
        url = e.str("NATS_URL")
        if url and not all(re.match(r"^(nats|tls|ws|wss)://\S+$", u.strip()) for u in url.split(",")):
            raise SettingError("NATS_URL", url, "give the server as nats://host:port (several: comma-separated)")
        subjects = {}
        for q in BRIDGED:
            name = f"NATS_SUBJECT_{q.upper()}"
            subj = e.str(name, q)
            if not SUBJECT_RE.match(subj):
                raise SettingError(name, subj, "give a NATS subject without wildcards, e.g. agents.llm_requests")
            subjects[q] = subj
        if len(set(subjects.values())) != len(subjects):
            raise SettingError("NATS_SUBJECT_*", ",".join(subjects.values()),
                               "give each bridged queue a subject of its own")
        stream = e.str("NATS_STREAM", "AGENT_REQUESTS")
        if not STREAM_RE.match(stream):
            raise SettingError("NATS_STREAM", stream, "give a stream name of letters, digits, - and _")
        return cls(url=url, mode=e.choice("NATS_MODE", "core", ("core", "jetstream"),
                                          "core: at-most-once; jetstream: nothing lost, nothing doubled"),
                   stream=stream, subjects=subjects)
