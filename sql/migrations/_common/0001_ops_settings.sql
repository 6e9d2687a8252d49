-- depends: 0000_ops
-- ops.settings: operator settings of this database that only its owner role may change (no service
-- role gets any privilege on it). SECURITY DEFINER functions callable by a service role read their
-- limits here, e.g. the minimum age a retention function may be asked to delete.
CREATE TABLE ops.settings (
    key        text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{1,60}$'),
    value      text NOT NULL,
    comment    text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ops.settings IS 'Owner-only settings of this database (e.g. retention minimums); service roles cannot read or change them.';
