-- The TCP ports the destination of a live migration chose (free ones in its range) and
-- answered from pre_live_migration: the source's live_migration step, also when it is
-- re-sent after a restart, connects there. NULL: none answered (unix sockets, or an
-- agent that predates the answer and listens where the uuid says).
ALTER TABLE compute_migrations ADD COLUMN dest_port BIGINT;
ALTER TABLE compute_migrations ADD COLUMN dest_nbd_port BIGINT;
