"""The instance's inbox consumer acks a message in shared_queue only after the fold committed locally."""

from __future__ import annotations

from helpers import cron_job_paused
from orchestrator.infra.db import connect, role_conninfo

KEY = "inbox.ack_after_commit"


def _count(sq_owner, table: str) -> int:
    return sq_owner.execute(f"SELECT count(*) AS n FROM pgmq.{table} WHERE message->'patterns'->0->>'key' = %s",
                            (KEY,)).fetchone()["n"]


def test_a_failed_fold_loses_nothing_and_acks_wait_for_the_commit(s, clean_queues, sq_owner, bus_for, admin):
    admin("singularity").execute("DELETE FROM core.global_knowledge WHERE key = %s", (KEY,))
    admin("singularity").execute("DELETE FROM outbox.inbox_acks")
    sq_owner.execute("DELETE FROM pgmq.a_knowledge_updates WHERE message->'patterns'->0->>'key' = %s", (KEY,))
    # pg_cron runs the same consumer every minute: paused for these steps, so none of them interleaves
    with cron_job_paused(s, "singularity:consume_inbox"):
        _fail_then_fold_then_ack(s, sq_owner, bus_for)


def _fail_then_fold_then_ack(s, sq_owner, bus_for) -> None:
    cc = bus_for("svc_centralcloud")
    cc.publish("knowledge_updates", {"type": "aggregated_patterns", "generated_at": "2026-12-02T00:00:00Z",
                                     "patterns": [{"key": KEY, "kind": "practice", "instances": 3,
                                                   "total_occurrences": 9, "confidence": 0.7, "rank": 1,
                                                   "packages": []}]})
    with connect(role_conninfo(s, "singularity", "svc_singularity"), autocommit=False) as c:
        # 1. the run fails after folding (rolled back): the message must still be in the queue
        c.execute("SELECT outbox.consume_inbox()")
        c.rollback()
        assert _count(sq_owner, "q_knowledge_updates") == 1 and _count(sq_owner, "a_knowledge_updates") == 0
        assert c.execute("SELECT count(*) AS n FROM core.global_knowledge WHERE key = %s", (KEY,)).fetchone()["n"] == 0
        c.rollback()
        # 2. a run that commits folds it in; it is acked only by the next run
        sq_owner.execute("UPDATE pgmq.q_knowledge_updates SET vt = now()")  # the failed run's lease, expired
        c.execute("SELECT outbox.consume_inbox()")
        c.commit()
        got = c.execute("SELECT instances, total_occurrences FROM core.global_knowledge WHERE key = %s",
                        (KEY,)).fetchone()
        assert (got["instances"], got["total_occurrences"]) == (3, 9)
        assert _count(sq_owner, "q_knowledge_updates") == 1
        c.commit()
        # 3. the next run acks it (archived, not deleted), and folds nothing twice
        r = c.execute("SELECT outbox.consume_inbox() AS r").fetchone()["r"]
        c.commit()
        assert r["knowledge"] == 0
        assert _count(sq_owner, "q_knowledge_updates") == 0 and _count(sq_owner, "a_knowledge_updates") == 1


def test_templates_are_recorded_and_deleted_files_removed(s, clean_queues, bus_for, admin):
    admin("singularity").execute("DELETE FROM core.templates WHERE path LIKE 'inbox-test/%'")
    cc = bus_for("svc_centralcloud")
    files = [{"path": "inbox-test/a.md", "hash": "h1", "content": "A"},
             {"path": "inbox-test/b.md", "hash": "h2", "content": "B"}]
    cc.publish("template_updates", {"type": "templates_updated", "git_url": "file:///t", "commit": "c1",
                                    "updated_files": files})
    with connect(role_conninfo(s, "singularity", "svc_singularity")) as c:
        c.execute("SELECT outbox.consume_inbox()")
        got = {r["path"]: r["commit"] for r in c.execute(
            "SELECT path, commit FROM core.templates WHERE path LIKE 'inbox-test/%'")}
        assert got == {"inbox-test/a.md": "c1", "inbox-test/b.md": "c1"}
        cc.publish("template_updates", {"type": "templates_updated", "git_url": "file:///t", "commit": "c2",
                                        "updated_files": [{"path": "inbox-test/b.md", "hash": "h3", "content": "B2"}],
                                        "deleted_files": ["inbox-test/a.md"]})
        c.execute("SELECT outbox.consume_inbox()")
        got = {r["path"]: (r["commit"], r["content"]) for r in c.execute(
            "SELECT path, commit, content FROM core.templates WHERE path LIKE 'inbox-test/%'")}
        assert got == {"inbox-test/b.md": ("c2", "B2")}
