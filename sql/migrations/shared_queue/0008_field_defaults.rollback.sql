ALTER TABLE bus.message_fields DROP COLUMN IF EXISTS default_value;
