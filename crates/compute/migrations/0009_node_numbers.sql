-- Before microversion 2.53 Nova shows hypervisors by an integer id (and takes it in
-- GET /os-hypervisors/{id}); from 2.53 by the uuid. Each compute node gets its number from
-- the `compute_nodes` counter.
ALTER TABLE compute_nodes ADD COLUMN num BIGINT;
UPDATE compute_nodes SET num = (SELECT COUNT(*) FROM compute_nodes n2
    WHERE n2.created_at < compute_nodes.created_at
       OR (n2.created_at = compute_nodes.created_at AND n2.id <= compute_nodes.id));
INSERT INTO compute_id_sequences (name, value) SELECT 'compute_nodes', COUNT(*) FROM compute_nodes;
