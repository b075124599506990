-- Quota usage is summed in SQL instead of decoding every row's flavor snapshot.
ALTER TABLE compute_instances ADD COLUMN vcpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE compute_instances ADD COLUMN memory_mb BIGINT NOT NULL DEFAULT 0;
