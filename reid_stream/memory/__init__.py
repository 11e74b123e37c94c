"""The long-term memory in PostgreSQL: the archive's reads and writes, and the archiver that fills it."""
