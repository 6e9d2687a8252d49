-- depends: 0008_field_defaults
-- Cold storage (seed 001, phase 3): archive rows past retention are exported to files (one per queue
-- per UTC day of archived_at) before retention deletes them, and can be restored next to the live
-- archives. This catalog is the operator's (own_shared_queue); no service role writes it.
CREATE TABLE bus.cold_exports (
    queue_name    text NOT NULL,
    day           date NOT NULL,
    file          text NOT NULL,
    rows          bigint NOT NULL CHECK (rows >= 0),
    first_msg_id  bigint,
    last_msg_id   bigint,
    rows_checksum text NOT NULL,
    file_sha256   text NOT NULL,
    bytes         bigint NOT NULL CHECK (bytes >= 0),
    exported_at   timestamptz NOT NULL DEFAULT now(),
    verified_at   timestamptz,
    pruning_at    timestamptz,
    pruned_at     timestamptz,
    restored_at   timestamptz,
    note          text,
    PRIMARY KEY (queue_name, day)
);
COMMENT ON TABLE bus.cold_exports IS
    'One row per exported (queue, UTC day): the file, its row count and checksums, and whether it was verified, pruned, restored.';
COMMENT ON COLUMN bus.cold_exports.rows_checksum IS 'bus.cold_digest: sha256 over the md5 of each exported line in msg_id order.';
COMMENT ON COLUMN bus.cold_exports.file_sha256 IS 'sha256 of the compressed file''s bytes.';
COMMENT ON COLUMN bus.cold_exports.verified_at IS 'Set once the written file was read back and matched the live rows; prune deletes only verified days.';
COMMENT ON COLUMN bus.cold_exports.pruning_at IS 'Deletion of the day''s live rows began (they are in the verified file); it is finished, never redone.';

-- Archive rows brought back from cold storage; bus.archived_messages shows them next to the live archives.
CREATE TABLE bus.restored_archive (
    queue_name   text NOT NULL,
    msg_id       bigint NOT NULL,
    read_ct      int NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    last_read_at timestamptz,
    archived_at  timestamptz NOT NULL,
    vt           timestamptz,
    message      jsonb,
    headers      jsonb,
    day          date NOT NULL,
    restored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, msg_id)
);
CREATE INDEX restored_archive_day ON bus.restored_archive (queue_name, day);
CREATE INDEX restored_archive_archived_at ON bus.restored_archive (archived_at);
COMMENT ON TABLE bus.restored_archive IS 'Archive rows restored from cold storage (orchestrator archive restore); read-only analytics.';
