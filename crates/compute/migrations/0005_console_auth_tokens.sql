-- One-time console tokens (Nova's `console_auth_tokens`): in the database rather than in
-- the memory of the API process that issued them, so any API process sharing the database
-- can redeem a token, a restart does not forget it, and the single use is decided by one
-- conditional UPDATE whichever process gets there first.
-- Only a SHA-256 of the token is stored: a reader of the table (a backup, a replica)
-- cannot open anyone's console.
CREATE TABLE IF NOT EXISTS compute_console_auth_tokens (
    token_hash TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL,
    -- The compute host the server ran on when the token was issued.
    host TEXT NOT NULL,
    console_type TEXT NOT NULL,
    -- Where the proxy connects: a TCP address, or a unix socket path on the proxy's host.
    target_host TEXT NOT NULL,
    target_port BIGINT NOT NULL,
    target_path TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    -- Set by the connection that consumed the token (the row stays until it expires,
    -- so a second attempt is told "already used" rather than "unknown").
    used_at TEXT
);
CREATE INDEX IF NOT EXISTS compute_console_auth_tokens_instance ON compute_console_auth_tokens (instance_uuid);
CREATE INDEX IF NOT EXISTS compute_console_auth_tokens_expires ON compute_console_auth_tokens (expires_at);
