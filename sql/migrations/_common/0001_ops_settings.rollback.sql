DROP TABLE IF EXISTS ops.settings;
