-- Run by the cluster superuser in every database on every migrate, before the owner's migrations.
-- Idempotent. Only what needs superuser lives here; everything else is in migrations/procedures.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
