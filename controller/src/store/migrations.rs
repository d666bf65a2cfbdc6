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
    // 2: proxy inbounds and clients per node, traffic totals, the journal cursor per node, and
    // subscription fetch counts.
    r#"
    ALTER TABLE nodes ADD COLUMN next_inbound_id INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE inbounds (
        node_id         INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        id              INTEGER NOT NULL,
        tag             TEXT NOT NULL,
        listen          TEXT NOT NULL DEFAULT '',
        port            INTEGER NOT NULL,
        protocol        TEXT NOT NULL,
        remark          TEXT NOT NULL DEFAULT '',
        enable          INTEGER NOT NULL DEFAULT 1,
        settings        TEXT NOT NULL,
        stream_settings TEXT NOT NULL,
        sniffing        TEXT NOT NULL,
        up              INTEGER NOT NULL DEFAULT 0,
        down            INTEGER NOT NULL DEFAULT 0,
        created_at      INTEGER NOT NULL,
        PRIMARY KEY (node_id, id),
        UNIQUE (node_id, port),
        UNIQUE (node_id, tag)
    );
    CREATE TABLE clients (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id          INTEGER NOT NULL,
        inbound_id       INTEGER NOT NULL,
        email            TEXT NOT NULL COLLATE NOCASE,
        secret           TEXT NOT NULL,
        flow             TEXT NOT NULL DEFAULT '',
        enable           INTEGER NOT NULL DEFAULT 1,
        expiry_ms        INTEGER NOT NULL DEFAULT 0,
        total_bytes      INTEGER NOT NULL DEFAULT 0,
        limit_ip         INTEGER NOT NULL DEFAULT 0,
        sub_id           TEXT NOT NULL DEFAULT '',
        tg_id            TEXT NOT NULL DEFAULT '',
        comment          TEXT NOT NULL DEFAULT '',
        reset_generation INTEGER NOT NULL DEFAULT 0,
        up               INTEGER NOT NULL DEFAULT 0,
        down             INTEGER NOT NULL DEFAULT 0,
        cut_off          TEXT,
        created_at       INTEGER NOT NULL,
        FOREIGN KEY (node_id, inbound_id) REFERENCES inbounds(node_id, id) ON DELETE CASCADE,
        UNIQUE (node_id, email)
    );
    CREATE INDEX clients_email ON clients(email);
    CREATE INDEX clients_secret ON clients(secret);
    CREATE TABLE traffic_cursors (
        node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
        journal INTEGER NOT NULL,
        seq     INTEGER NOT NULL
    );
    CREATE TABLE node_traffic (
        node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
        up      INTEGER NOT NULL DEFAULT 0,
        down    INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE sub_fetches (
        email   TEXT PRIMARY KEY COLLATE NOCASE,
        count   INTEGER NOT NULL,
        last_at INTEGER NOT NULL
    );
    "#,
    // 3: a time series of each node's state, sampled by the controller (the web UI's history).
    r#"
    CREATE TABLE node_history (
        node_id        INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        ts             INTEGER NOT NULL,
        available      INTEGER NOT NULL,
        core_running   INTEGER NOT NULL,
        cpu            REAL,
        online_clients INTEGER NOT NULL,
        traffic_total  INTEGER NOT NULL,
        rtt_ms         REAL,
        PRIMARY KEY (node_id, ts)
    );
    CREATE INDEX node_history_ts ON node_history(ts);
    "#,
    // 4: AdGuard Home instances the controller polls (password sealed with secret.key), and one
    // sample per source per collection (the web UI's AdGuard panels).
    r#"
    CREATE TABLE adguard_sources (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        name              TEXT NOT NULL UNIQUE COLLATE NOCASE,
        admin_url         TEXT NOT NULL,
        dns_url           TEXT NOT NULL DEFAULT '',
        username          TEXT NOT NULL DEFAULT '',
        password          BLOB,
        verify_tls        INTEGER NOT NULL DEFAULT 1,
        enabled           INTEGER NOT NULL DEFAULT 1,
        last_error        TEXT NOT NULL DEFAULT '',
        last_success_ts   INTEGER NOT NULL DEFAULT 0,
        last_collected_ts INTEGER NOT NULL DEFAULT 0,
        api_base          TEXT NOT NULL DEFAULT '',
        version           TEXT NOT NULL DEFAULT '',
        created_at        INTEGER NOT NULL
    );
    CREATE TABLE adguard_samples (
        source_id           INTEGER NOT NULL REFERENCES adguard_sources(id) ON DELETE CASCADE,
        ts                  INTEGER NOT NULL,
        available           INTEGER NOT NULL,
        queries_total       INTEGER NOT NULL,
        blocked_total       INTEGER NOT NULL,
        avg_latency_ms      REAL,
        cache_hit_ratio     REAL,
        upstream_errors     INTEGER,
        top_blocked_domains TEXT NOT NULL DEFAULT '[]',
        top_clients         TEXT NOT NULL DEFAULT '[]',
        error               TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (source_id, ts)
    );
    CREATE INDEX adguard_samples_ts ON adguard_samples(ts);
    "#,
    // 5: the per-host user lifecycle (v2ray-stat): auto-renew days per client, and per node the
    // last user change its agent made locally that the controller applied (exactly once).
    r#"
    ALTER TABLE clients ADD COLUMN renew_days INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE user_change_cursors (
        node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
        outbox  INTEGER NOT NULL,
        last_id INTEGER NOT NULL
    );
    "#,
    // 6: WireGuard (the CandyPanel API). `wg` is the fleet-wide interface number the API shows;
    // the device on its node is named `wg{wg}`, so names never collide across nodes. Private keys
    // are sealed with secret.key. Bearer sessions of API logins, the panel's settings, and the
    // Telegram bot's users and orders.
    r#"
    CREATE TABLE wg_interfaces (
        wg                 INTEGER PRIMARY KEY,
        node_id            INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        private_key        BLOB NOT NULL,
        public_key         TEXT NOT NULL,
        port               INTEGER NOT NULL,
        address_range      TEXT NOT NULL,
        ipv6_address_range TEXT,
        endpoint           TEXT,
        status             INTEGER NOT NULL DEFAULT 1,
        created_at         INTEGER NOT NULL,
        UNIQUE (node_id, port)
    );
    CREATE TABLE wg_clients (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        name             TEXT NOT NULL UNIQUE,
        wg               INTEGER NOT NULL REFERENCES wg_interfaces(wg) ON DELETE CASCADE,
        public_key       TEXT NOT NULL UNIQUE,
        private_key      BLOB NOT NULL,
        address          TEXT NOT NULL,
        ipv6_address     TEXT,
        created_at       TEXT NOT NULL,
        expires          TEXT NOT NULL,
        expires_ms       INTEGER NOT NULL,
        note             TEXT NOT NULL DEFAULT '',
        traffic          TEXT NOT NULL,
        quota_bytes      INTEGER NOT NULL,
        used_down        INTEGER NOT NULL DEFAULT 0,
        used_up          INTEGER NOT NULL DEFAULT 0,
        status           INTEGER NOT NULL DEFAULT 1,
        reset_generation INTEGER NOT NULL DEFAULT 0,
        cut_off          TEXT,
        UNIQUE (wg, address)
    );
    CREATE TABLE wg_revisions (
        node_id  INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
        revision INTEGER NOT NULL
    );
    CREATE TABLE wg_traffic_cursors (
        node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
        journal INTEGER NOT NULL,
        seq     INTEGER NOT NULL
    );
    CREATE TABLE api_sessions (
        token_hash BLOB PRIMARY KEY,
        username   TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE candy_settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE bot_users (
        telegram_id       INTEGER PRIMARY KEY,
        candy_client_name TEXT UNIQUE,
        traffic_bought_gb REAL NOT NULL DEFAULT 0,
        time_bought_days  INTEGER NOT NULL DEFAULT 0,
        status            TEXT NOT NULL DEFAULT 'active',
        created_at        TEXT NOT NULL,
        language          TEXT NOT NULL DEFAULT 'en'
    );
    CREATE TABLE bot_transactions (
        order_id         TEXT PRIMARY KEY,
        telegram_id      INTEGER NOT NULL,
        amount           REAL NOT NULL,
        card_number_sent TEXT NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending',
        requested_at     TEXT NOT NULL,
        approved_at      TEXT,
        admin_note       TEXT,
        purchase_type    TEXT NOT NULL,
        quantity         REAL NOT NULL DEFAULT 0,
        time_quantity    REAL NOT NULL DEFAULT 0,
        traffic_quantity REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX bot_transactions_status ON bot_transactions(status);
    "#,
    // 7: rolling agent upgrades. The package catalog keeps whole .deb files (a few MB each) in the
    // store, so a backup carries them and a rollback never lacks its package.
    r#"
    ALTER TABLE nodes ADD COLUMN agent_package TEXT;
    CREATE TABLE agent_packages (
        version  TEXT PRIMARY KEY,
        arch     TEXT NOT NULL,
        sha256   BLOB NOT NULL UNIQUE,
        size     INTEGER NOT NULL,
        data     BLOB NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE TABLE rollouts (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        version          TEXT NOT NULL,
        batch_size       INTEGER NOT NULL,
        canary           INTEGER NOT NULL,
        health_timeout_s INTEGER NOT NULL,
        state            TEXT NOT NULL,
        message          TEXT,
        created_by       TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        finished_at      INTEGER
    );
    CREATE TABLE rollout_nodes (
        rollout_id   INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        node_id      INTEGER NOT NULL,
        node_name    TEXT NOT NULL,
        position     INTEGER NOT NULL,
        wave         INTEGER NOT NULL,
        state        TEXT NOT NULL,
        from_version TEXT,
        message      TEXT,
        started_at   INTEGER,
        deadline_at  INTEGER,
        finished_at  INTEGER,
        PRIMARY KEY (rollout_id, node_id)
    );
    "#,
    // 8: the VPS API: catalogs, servers (containers on nodes, owned by users), their tasks and
    // metrics; users get an optional e-mail (the panel logs in by e-mail).
    r#"
    ALTER TABLE users ADD COLUMN email TEXT;
    CREATE UNIQUE INDEX users_email ON users(email COLLATE NOCASE) WHERE email IS NOT NULL;
    CREATE TABLE vps_os (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        name       TEXT NOT NULL UNIQUE,
        type       TEXT NOT NULL DEFAULT 'linux',
        template   TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE vps_tariffs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL UNIQUE,
        cores       INTEGER NOT NULL,
        memory_mib  INTEGER NOT NULL,
        disk_gb     INTEGER NOT NULL,
        price       REAL NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE vps_servers (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        node_id       INTEGER REFERENCES nodes(id) ON DELETE SET NULL,
        os_id         INTEGER NOT NULL REFERENCES vps_os(id),
        tariff_id     INTEGER NOT NULL REFERENCES vps_tariffs(id),
        container     TEXT NOT NULL UNIQUE,
        vmid          INTEGER NOT NULL,
        status        TEXT NOT NULL,
        ip_address    TEXT,
        root_password BLOB,
        cores         INTEGER NOT NULL,
        memory_mib    INTEGER NOT NULL,
        disk_gb       INTEGER NOT NULL,
        create_task   TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE TABLE vps_tasks (
        upid       TEXT PRIMARY KEY,
        server_id  INTEGER REFERENCES vps_servers(id) ON DELETE SET NULL,
        -- The server's owner, kept when the server is gone (its delete task stays theirs).
        user_id    INTEGER REFERENCES users(id) ON DELETE CASCADE,
        node_id    INTEGER,
        kind       TEXT NOT NULL,
        state      TEXT NOT NULL,
        message    TEXT,
        log        TEXT NOT NULL DEFAULT '',
        started_at INTEGER NOT NULL,
        ended_at   INTEGER
    );
    CREATE TABLE vps_metrics (
        server_id INTEGER NOT NULL REFERENCES vps_servers(id) ON DELETE CASCADE,
        ts        INTEGER NOT NULL,
        cpu       REAL NOT NULL,
        mem_used  INTEGER NOT NULL,
        mem_max   INTEGER NOT NULL,
        disk_used INTEGER NOT NULL,
        disk_max  INTEGER NOT NULL,
        net_in    INTEGER NOT NULL,
        net_out   INTEGER NOT NULL,
        PRIMARY KEY (server_id, ts)
    );
    "#,
    // 9: API keys of the external (Panelica-style) API.
    r#"
    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        public_key   TEXT NOT NULL UNIQUE,
        -- sk_… sealed with secret.key: HMACs are verified with it, so it cannot be hashed.
        secret       BLOB NOT NULL,
        environment  TEXT NOT NULL,
        scopes       TEXT NOT NULL,
        tier         TEXT NOT NULL,
        ip_allow     TEXT NOT NULL DEFAULT '[]',
        expires_at   INTEGER,
        enabled      INTEGER NOT NULL DEFAULT 1,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER
    );
    CREATE INDEX api_keys_user ON api_keys(user_id);
    "#,
    // 10: webhooks of the external API and their durable delivery outbox.
    r#"
    CREATE TABLE webhooks (
        id                  TEXT PRIMARY KEY,
        user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name                TEXT NOT NULL,
        destination_type    TEXT NOT NULL CHECK (destination_type IN ('http', 'telegram', 'slack', 'discord')),
        -- What the API shows: the config with its secrets (tokens, webhook URLs) masked.
        destination_config  TEXT NOT NULL,
        -- The whole config as JSON, sealed with secret.key: what deliveries use.
        destination_sealed  BLOB NOT NULL,
        events              TEXT NOT NULL,
        retry_count         INTEGER NOT NULL DEFAULT 3,
        retry_delay_seconds INTEGER NOT NULL DEFAULT 60,
        timeout_seconds     INTEGER NOT NULL DEFAULT 30,
        enabled             INTEGER NOT NULL DEFAULT 1,
        -- The HMAC secret of X-Flotilla-Signature, sealed (it must be read back to sign).
        secret              BLOB NOT NULL,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL
    );
    CREATE INDEX webhooks_user ON webhooks(user_id);
    -- The outbox: one row per (event, webhook), written when the event is emitted. Times in
    -- Unix milliseconds (retries and latencies are sub-second).
    CREATE TABLE webhook_deliveries (
        id               TEXT PRIMARY KEY,
        webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        event_id         TEXT NOT NULL,
        event_type       TEXT NOT NULL,
        payload          TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'success', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  INTEGER NOT NULL,
        -- Taken by the worker (an attempt is under way); cleared at start-up.
        claimed          INTEGER NOT NULL DEFAULT 0,
        status_code      INTEGER,
        response_time_ms INTEGER,
        error            TEXT,
        created_at       INTEGER NOT NULL,
        delivered_at     INTEGER,
        UNIQUE (webhook_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
    CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
    CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
    "#,
    // 11: the e-mail outbox: a mail is a row before it is sent, so a restart loses nothing. Times
    // in Unix milliseconds, like the webhook outbox.
    r#"
    CREATE TABLE mail_outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient       TEXT NOT NULL,
        subject         TEXT NOT NULL,
        body            TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
        -- Attempts that ended (a claim cut short by a crash is not counted).
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        -- Set while the worker attempts it (a lease); cleared at start-up.
        claimed_until   INTEGER,
        last_error      TEXT,
        created_at      INTEGER NOT NULL,
        sent_at         INTEGER
    );
    CREATE INDEX mail_outbox_due ON mail_outbox(state, next_attempt_at);
    CREATE INDEX mail_outbox_created ON mail_outbox(created_at);
    "#,
];
