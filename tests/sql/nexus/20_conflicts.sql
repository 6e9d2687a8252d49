-- A request id reused is a conflict (DESIGN.md 8b): an approved request's id sent again with another
-- diff gets an error, never the earlier decision; a budget reservation is not shared by a reused id.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(14);

SELECT is(nexus.hitl_claim('approval', 'approval_requests', 7, 1, 300,
          '{"id": "X1", "agent_id": "ag", "file_path": "README.md", "diff": "+fixed typo"}', 'approval_responses', 3600,
          'svc_singularity', ops.request_hash('{"id": "X1", "agent_id": "ag", "file_path": "README.md", "diff": "+fixed typo"}')),
          'pending', 'the first request is held for a person');
SELECT ok((SELECT sender = 'svc_singularity' AND request_sha256 IS NOT NULL FROM nexus.hitl_items WHERE request_id = 'X1'),
          'the item records its sender and the hash of the request');
SELECT is(nexus.hitl_decide('X1', 'alice', true, NULL, NULL)->'decision'->>'approved', 'true', 'alice approves the typo fix');
SELECT nexus.hitl_published('X1');
-- the same id, another diff: the attack of the review
SELECT is(nexus.hitl_claim('approval', 'approval_requests', 8, 1, 300,
          '{"id": "X1", "agent_id": "ag", "file_path": "/etc/sudoers", "diff": "+ALL ALL=(ALL) NOPASSWD: ALL"}',
          'approval_responses', 3600, 'svc_singularity',
          ops.request_hash('{"id": "X1", "agent_id": "ag", "file_path": "/etc/sudoers", "diff": "+ALL ALL=(ALL) NOPASSWD: ALL"}')),
          'conflict', 'the same id with another diff is a conflict');
SELECT is((SELECT status || ' ' || msg_id || ' ' || (payload->>'file_path') FROM nexus.hitl_items WHERE request_id = 'X1'),
          'published 7 README.md', 'the held item is unchanged (not re-armed for publishing, not re-pointed)');
SELECT is((SELECT count(*)::int FROM nexus.hitl_to_publish('X1')), 0, 'nothing is queued for publishing under that id');
SELECT is(nexus.hitl_conflict_response('approval', 'X1', 'h') - 'error'::text,
          '{"request_id": "X1", "approved": false, "decided_by": "nexus:conflict", "comment": "request id reused", "request_sha256": "h"}'::jsonb,
          'the conflict answer is a refusal by nexus:conflict');
SELECT matches(nexus.hitl_conflict_response('question', 'X1', 'h')->>'error', '^request id X1 is already used',
               'and says why, for questions too');
-- the same content from another sender (another instance) is a conflict as well
SELECT is(nexus.hitl_claim('approval', 'approval_requests', 9, 1, 300,
          '{"id": "X1", "agent_id": "ag", "file_path": "README.md", "diff": "+fixed typo"}', 'approval_responses_x', 3600,
          'svc_singularity_x', ops.request_hash('{"id": "X1", "agent_id": "ag", "file_path": "README.md", "diff": "+fixed typo"}')),
          'conflict', 'the same id from another sender is a conflict');
-- a real redelivery (same sender, same content) re-attaches and is answered again with its decision
SELECT is(nexus.hitl_claim('approval', 'approval_requests', 10, 1, 300,
          '{"id": "X1", "agent_id": "ag", "file_path": "README.md", "diff": "+fixed typo", "created_at": "2026-01-01T00:00:00Z"}',
          'approval_responses', 3600, 'svc_singularity',
          ops.request_hash('{"id": "X1", "agent_id": "ag", "file_path": "README.md", "diff": "+fixed typo"}')),
          'decided', 'the same request re-sent (other envelope time) is answered again with its decision');
-- a question id reused as an approval is a conflict too
SELECT nexus.hitl_claim('question', 'question_requests', 11, 1, 300, '{"id": "Q9", "agent_id": "ag", "question": "?"}',
                        'question_responses', 3600, 'svc_singularity', NULL);
SELECT is(nexus.hitl_claim('approval', 'approval_requests', 12, 1, 300,
          '{"id": "Q9", "agent_id": "ag", "question": "?"}', 'approval_responses', 3600, 'svc_singularity', NULL),
          'conflict', 'an id held by a question is not an approval');

-- budget reservations: a reused id does not ride on another request's reservation
SELECT nexus.set_provider('p1', 'offline', NULL, NULL);
SELECT nexus.set_model('m1', 'p1', 'm1', 1, 2, 100);
SELECT nexus.set_route('chat', ARRAY['m1']);
SELECT nexus.set_budget('ag', 200, NULL);
SELECT nexus.set_budget('other', 200, NULL);
SELECT is(nexus.admit('B1', 'ag', 'chat', NULL, 40, NULL, 'svc_singularity', 'h1')->>'admitted', 'true', 'a request is admitted');
SELECT is(nexus.admit('B1', 'other', 'chat', NULL, 40, NULL, 'svc_singularity_x', 'h2')->>'conflict', 'true',
          'its id sent by another sender for another request is refused as a conflict');
SELECT is(nexus.admit('B1', 'ag', 'chat', NULL, 40, NULL, 'svc_singularity', 'h1')->>'admitted', 'true',
          'the real redelivery keeps its reservation');

SELECT * FROM finish();
ROLLBACK;
