-- OS-DCF:diskConfig as the user asked for it (AUTO: the root filesystem is grown to the
-- disk; MANUAL: left as the image has it), shown back as Nova does.
ALTER TABLE compute_instances ADD COLUMN auto_disk_config BIGINT NOT NULL DEFAULT 0;
