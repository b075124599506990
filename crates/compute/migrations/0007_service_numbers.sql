-- Before microversion 2.53 Nova shows services by an integer id (and takes it in
-- DELETE /os-services/{id}); from 2.53 by the uuid. Each service row gets its number from
-- the `compute_services` counter; 1 and 2 are the controller's conductor and scheduler.
ALTER TABLE compute_services ADD COLUMN num BIGINT;
UPDATE compute_services SET num = 2 + (SELECT COUNT(*) FROM compute_services s2
    WHERE s2.created_at < compute_services.created_at
       OR (s2.created_at = compute_services.created_at AND s2.id <= compute_services.id));
INSERT INTO compute_id_sequences (name, value) SELECT 'compute_services', 2 + COUNT(*) FROM compute_services;
