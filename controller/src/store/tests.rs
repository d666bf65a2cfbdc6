use super::*;
use time::Duration;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn node(store: &Store, name: &str) -> NodeRecord {
    store.create_node(&NewNode { name: name.into(), ..Default::default() }).unwrap()
}

#[test]
fn migrates_from_every_older_version() {
    for start in 0..migrations::MIGRATIONS.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &migrations::MIGRATIONS[..start] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", start as i64).unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::MIGRATIONS.len() as i64);
        assert_eq!(store.user_count().unwrap(), 0);
    }
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join("controller.db")).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    assert!(matches!(Store::open(dir.path()), Err(StoreError::TooNew { found: 999, .. })));
}

#[test]
fn users_are_unique_and_updatable() {
    let (_d, store) = open();
    store.create_user("admin", "$argon2id$fake", Role::Admin).unwrap();
    assert!(matches!(store.create_user("admin", "x", Role::Viewer), Err(StoreError::Conflict(_))));
    assert!(store.set_password_hash("admin", "$argon2id$new").unwrap());
    assert!(!store.set_password_hash("ghost", "x").unwrap());
    let u = store.user("admin").unwrap().unwrap();
    assert_eq!((u.password_hash.as_str(), u.role), ("$argon2id$new", Role::Admin));
    assert!(store.user("ghost").unwrap().is_none());
}

#[test]
fn node_password_is_encrypted_at_rest() {
    let (dir, store) = open();
    let n = store
        .create_node(&NewNode {
            name: "nl-1".into(),
            panel_user: Some("panel-admin-name".into()),
            panel_password: Some("s3cret-pass".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(n.has_panel_password && n.has_panel_user);
    assert_eq!(
        store.panel_credentials(n.id).unwrap(),
        Some((Some("panel-admin-name".to_string()), Some("s3cret-pass".to_string())))
    );
    assert_eq!(store.panel_credentials(NodeId(999)).unwrap(), None);
    drop(store);
    let raw = std::fs::read(dir.path().join("controller.db")).unwrap();
    let wal = std::fs::read(dir.path().join("controller.db-wal")).unwrap_or_default();
    for needle in [&b"s3cret-pass"[..], b"panel-admin-name"] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
        assert!(!wal.windows(needle.len()).any(|w| w == needle));
    }
}

#[test]
fn node_names_are_unique_and_ids_never_reused() {
    let (_d, store) = open();
    let a = node(&store, "a");
    for dup in ["a", "A"] {
        assert!(matches!(
            store.create_node(&NewNode { name: dup.into(), ..Default::default() }),
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(store.delete_node(a.id).unwrap());
    assert!(!store.delete_node(a.id).unwrap());
    let b = node(&store, "a");
    assert!(b.id > a.id);
}

#[test]
fn join_tokens_are_single_use_and_expire() {
    let (_d, store) = open();
    let n = node(&store, "a");
    let now = OffsetDateTime::now_utc();
    store.create_join_token(n.id, &[1; 32], now + Duration::hours(1)).unwrap();
    store.create_join_token(n.id, &[2; 32], now - Duration::seconds(1)).unwrap();
    assert_eq!(store.consume_join_token(&[9; 32], now).unwrap(), Err(TokenRefusal::Unknown));
    assert_eq!(store.consume_join_token(&[2; 32], now).unwrap(), Err(TokenRefusal::Expired));
    assert_eq!(store.consume_join_token(&[1; 32], now).unwrap(), Ok(n.id));
    assert_eq!(store.consume_join_token(&[1; 32], now).unwrap(), Err(TokenRefusal::Used));
    assert!(store.node(n.id).unwrap().unwrap().enrolled_at.is_some());
    // Deleting the node takes its tokens with it.
    store.create_join_token(n.id, &[3; 32], now + Duration::hours(1)).unwrap();
    store.delete_node(n.id).unwrap();
    assert_eq!(store.consume_join_token(&[3; 32], now).unwrap(), Err(TokenRefusal::Unknown));
}

#[test]
fn newer_cert_in_use_supersedes_older_ones() {
    let (_d, store) = open();
    let n = node(&store, "a");
    let later = OffsetDateTime::now_utc() + Duration::days(30);
    store.record_cert(n.id, b"old", later).unwrap();
    store.record_cert(n.id, b"new", later).unwrap();
    // Connecting with the old one supersedes nothing newer.
    assert!(store.supersede_older_certs(n.id, b"old").unwrap().is_empty());
    assert_eq!(store.cert_status(b"new").unwrap(), CertStatus::Valid(n.id));
    assert_eq!(store.supersede_older_certs(n.id, b"new").unwrap(), vec![b"old".to_vec()]);
    assert_eq!(store.cert_status(b"old").unwrap(), CertStatus::Superseded(n.id));
    assert_eq!(store.valid_certs().unwrap(), vec![(b"new".to_vec(), n.id)]);
    store.delete_node(n.id).unwrap();
    assert_eq!(store.cert_status(b"new").unwrap(), CertStatus::Unknown);
}

#[test]
fn seen_records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path()).unwrap();
        let n = node(&store, "a");
        let facts = HostFacts { hostname: "h1".into(), cpu_cores: 2, ..Default::default() };
        store.record_node_connected(n.id, &facts).unwrap();
        let m = MetricsSample { mem_total: 42, ..Default::default() };
        store.record_node_seen(n.id, OffsetDateTime::now_utc(), Some(&m)).unwrap();
        n.id
    };
    let store = Store::open(dir.path()).unwrap();
    let n = store.node(id).unwrap().unwrap();
    assert_eq!(n.facts.unwrap().hostname, "h1");
    assert_eq!(n.last_metrics.unwrap().mem_total, 42);
    assert!(n.last_seen_at.is_some());
}

#[test]
fn nodes_are_renamed_with_unique_names() {
    let (_d, store) = open();
    let a = node(&store, "nl-1");
    node(&store, "de-1");
    assert!(store.rename_node(a.id, "NL-Amsterdam").unwrap());
    assert_eq!(store.node(a.id).unwrap().unwrap().name, "NL-Amsterdam");
    assert!(store.rename_node(a.id, "nl-amsterdam").unwrap(), "a node may change the case of its own name");
    assert!(matches!(store.rename_node(a.id, "DE-1"), Err(StoreError::Conflict(_))), "names are unique in any case");
    assert!(!store.rename_node(NodeId(999), "x").unwrap());
}
