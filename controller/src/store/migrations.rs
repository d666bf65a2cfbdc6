//! Schema history. Each entry moves the database from version `index` to `index + 1`; entries are
//! never edited once shipped, only appended.

/// Ordered migrations; `PRAGMA user_version` counts how many have been applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: users, nodes, join tokens, agent certificates.
    r#"
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE nodes (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        name           TEXT NOT NULL UNIQUE COLLATE NOCASE,
        url            TEXT,
        public_host    TEXT,
        panel_port     TEXT,
        base_path      TEXT NOT NULL DEFAULT '',
        panel_user     BLOB,
        panel_password BLOB,
        revision       INTEGER NOT NULL DEFAULT 0,
        created_at     INTEGER NOT NULL,
        enrolled_at    INTEGER,
        last_seen_at   INTEGER,
        facts          TEXT,
        last_metrics   TEXT
    );
    CREATE TABLE join_tokens (
        secret_hash BLOB PRIMARY KEY,
        node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        used_at     INTEGER
    );
    CREATE INDEX join_tokens_node ON join_tokens(node_id);
    CREATE TABLE node_certs (
        serial     BLOB PRIMARY KEY,
        node_id    INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        issued_at  INTEGER NOT NULL,
        not_after  INTEGER NOT NULL,
        superseded INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX node_certs_node ON node_certs(node_id);
    "#,
];
