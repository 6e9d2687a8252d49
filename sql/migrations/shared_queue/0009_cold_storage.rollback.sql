DROP TABLE IF EXISTS bus.restored_archive;
DROP TABLE IF EXISTS bus.cold_exports;
