-- depends: 0001_bus_catalog
-- A field may have a default the bus stamps when a sender leaves it out (the seeds' clients omit some:
-- job_requests without mode is a run).
ALTER TABLE bus.message_fields ADD COLUMN default_value jsonb;
COMMENT ON COLUMN bus.message_fields.default_value IS 'Stamped when the field is missing or null (then it is not required).';
