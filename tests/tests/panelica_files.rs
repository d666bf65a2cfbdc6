//! The external API's files and bandwidth endpoints against a real agent: files confined to the
//! agent's `[files] roots` (every escape refused with 403 through the API), both the document's
//! and the official clients' shapes, scopes; the trash (deletes without `permanent`, listed,
//! restored, removed for good); bandwidth totals that grow with the traffic the agent's network
//! namespace carries and survive an agent restart.

use std::os::unix::fs::symlink;
use std::time::Duration;

use base64::Engine;
use flotilla_tests::harness::Fleet;
use flotilla_tests::panelica::{create_key, now, External};
use serde_json::{json, Value};

/// `rawurlencode`, as the WHMCS module encodes query values.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn code(reply: &flotilla_tests::harness::Reply) -> &str {
    reply.body["code"].as_str().unwrap_or_default()
}

fn bandwidth(ext: &External) -> (u64, u64, String) {
    let d = ext.expect("GET", "/v1/bandwidth?period=monthly", None, 200);
    (d["total_bytes_in"].as_u64().unwrap(), d["total_bytes_out"].as_u64().unwrap(), d["month"].as_str().unwrap().into())
}

#[test]
fn files_confined_to_roots_and_bandwidth_counted() {
    let mut fleet = Fleet::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(root.join("site")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("passwd"), "secret").unwrap();
    std::fs::write(root.join("site/index.html"), "hello").unwrap();
    symlink(&secret, root.join("out")).unwrap();
    symlink("../secret/passwd", root.join("passwd-link")).unwrap();
    symlink("/dev/null", root.join("null")).unwrap();
    std::process::Command::new("mkfifo").arg(root.join("fifo")).status().unwrap();
    std::fs::write(root.join("huge.bin"), vec![b'a'; 6 * 1024 * 1024]).unwrap();
    let r = root.display().to_string();

    let agent = fleet.add_agent_configured("files-1", &format!("[files]\nroots = [\"{r}\"]\n"));
    let node_id = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node_id], Duration::from_secs(30));
    let in_namespace = fleet.agent(agent).host.ns.is_some();
    let ext = External::new(&fleet.api, create_key(&fleet, "files", "*:*", &[]));
    let (in0, out0, month) = bandwidth(&ext);

    // The official client's calls: the root, a listing, a read.
    let dirs = ext.expect("GET", "/v1/files/accessible-directories?user_id=1", None, 200);
    assert_eq!(dirs["directories"], json!([r]));
    let list = ext.expect("GET", &format!("/v1/files?user_id=1&path={}", enc(&r)), None, 200);
    let files = list["files"].as_array().unwrap();
    let site = files.iter().find(|f| f["name"] == "site").expect("site listed");
    assert_eq!((site["type"].as_str(), site["permissions"].as_str().map(str::len)), (Some("folder"), Some(4)));
    assert_eq!(site["is_dir"], true);
    assert!(files.iter().any(|f| f["name"] == "fifo" && f["type"] == "other"), "{list}");
    assert!(site["modified_at"].as_str().unwrap().ends_with('Z'));
    let index = format!("{r}/site/index.html");
    let read = ext.expect("GET", &format!("/v1/files/content?user_id=1&path={}", enc(&index)), None, 200);
    assert_eq!((read["content"].as_str(), read["encoding"].as_str()), (Some("hello"), Some("utf-8")));
    // With the node named, and the document's path-only form.
    let again = ext.expect("GET", &format!("/v1/files/content?path={index}&node_id={node_id}"), None, 200);
    assert_eq!(again["content"], "hello");

    // Write (client shape), then binary through base64.
    let body = json!({ "user_id": 1, "path": index, "content": "<h1>new</h1>" }).to_string();
    ext.expect("PUT", "/v1/files/content", Some(&body), 200);
    assert_eq!(std::fs::read_to_string(root.join("site/index.html")).unwrap(), "<h1>new</h1>");
    let binary = [0xffu8, 0xfe, 0, 1, 2];
    let b64 = base64::engine::general_purpose::STANDARD.encode(binary);
    let bin_path = format!("{r}/site/blob.bin");
    let body = json!({ "path": bin_path, "content": b64, "encoding": "base64" }).to_string();
    ext.expect("PUT", "/v1/files/content", Some(&body), 200);
    assert_eq!(std::fs::read(root.join("site/blob.bin")).unwrap(), binary);
    let read = ext.expect("GET", &format!("/v1/files/content?path={}", enc(&bin_path)), None, 200);
    assert_eq!((read["content"].as_str(), read["encoding"].as_str()), (Some(b64.as_str()), Some("base64")));

    // A file larger than one frame goes in chunks both ways.
    let big: String = (0..3 * 1024 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let big_path = format!("{r}/big.txt");
    let body = json!({ "path": big_path, "content": big }).to_string();
    ext.expect("PUT", "/v1/files/content", Some(&body), 200);
    let read = ext.expect("GET", &format!("/v1/files/content?path={}", enc(&big_path)), None, 200);
    assert!(read["content"].as_str() == Some(big.as_str()), "the 3 MiB file reads back whole");
    // Over the read cap (5 MiB).
    let reply = ext.call("GET", &format!("/v1/files/content?path={}", enc(&format!("{r}/huge.bin"))), None);
    assert_eq!((reply.status, code(&reply)), (413, "PAYLOAD_TOO_LARGE"), "{}", reply.raw);

    // Create a file and a folder as the WHMCS module does; again → 409.
    let new_file = json!({ "user_id": 1, "path": r, "name": "notes.txt", "type": "file", "content": "n" }).to_string();
    ext.expect("POST", "/v1/files", Some(&new_file), 201);
    let new_dir = json!({ "user_id": 1, "path": format!("{r}/site"), "name": "assets", "type": "folder" }).to_string();
    ext.expect("POST", "/v1/files", Some(&new_dir), 201);
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), "n");
    assert!(root.join("site/assets").is_dir());
    // Signed afresh: the same signature twice would be refused as a replay.
    let reply = ext.call_at("POST", "/v1/files", Some(&new_dir), now() + 1);
    assert_eq!((reply.status, code(&reply)), (409, "CONFLICT"), "{}", reply.raw);
    std::fs::write(root.join("site/assets/a.css"), "a").unwrap();

    // Delete, both shapes: the clients' JSON body (permanent false) and the document's ?path=.
    let body =
        json!({ "user_id": 1, "paths": [format!("{r}/notes.txt"), format!("{r}/site/assets")], "permanent": false })
            .to_string();
    let deleted = ext.expect("DELETE", "/v1/files", Some(&body), 200);
    assert_eq!(deleted["permanent"], false, "the clients' permanent: false moves to the trash");
    assert!(!root.join("notes.txt").exists() && !root.join("site/assets").exists());
    ext.expect("DELETE", &format!("/v1/files?path={}", enc(&bin_path)), None, 200);
    assert!(!root.join("site/blob.bin").exists());
    let reply = ext.call_at("DELETE", &format!("/v1/files?path={}", enc(&bin_path)), None, now() + 1);
    assert_eq!(reply.status, 404, "{}", reply.raw);

    // Every escape, through every route: 403.
    let s = secret.display().to_string();
    let reads = [
        format!("{r}/../secret/passwd"),
        format!("{s}/passwd"),
        "/etc/passwd".to_string(),
        format!("{r}/out/passwd"),
        format!("{r}/passwd-link"),
        format!("{r}/null"),
        format!("{r}/fifo"),
        "../secret/passwd".to_string(),
    ];
    for path in &reads {
        let reply = ext.call("GET", &format!("/v1/files/content?user_id=1&path={}", enc(path)), None);
        assert_eq!((reply.status, code(&reply)), (403, "FORBIDDEN"), "read {path}: {}", reply.raw);
    }
    for path in [format!("{r}/out"), "/".to_string(), format!("{r}/.."), s.clone()] {
        let reply = ext.call("GET", &format!("/v1/files?user_id=1&path={}", enc(&path)), None);
        assert_eq!(reply.status, 403, "list {path}: {}", reply.raw);
    }
    for path in [
        format!("{r}/out/new"),
        format!("{s}/new"),
        format!("{r}/../new"),
        format!("{r}/passwd-link"),
        format!("{r}/null"),
    ] {
        let body = json!({ "path": path, "content": "x" }).to_string();
        let reply = ext.call("PUT", "/v1/files/content", Some(&body));
        assert_eq!(reply.status, 403, "write {path}: {}", reply.raw);
    }
    for parent in [format!("{r}/out"), s.clone(), format!("{r}/site/../..")] {
        let body = json!({ "path": parent, "name": "x", "type": "file", "content": "x" }).to_string();
        let reply = ext.call("POST", "/v1/files", Some(&body));
        assert_eq!(reply.status, 403, "create in {parent}: {}", reply.raw);
    }
    let body = json!({ "paths": [format!("{r}/out/passwd")], "permanent": true }).to_string();
    // A DELETE's body is not signed: two body-DELETEs of one second share a signature and the
    // second would be a replay, so this one is signed with another timestamp.
    assert_eq!(ext.call_at("DELETE", "/v1/files", Some(&body), now() + 2).status, 403);
    assert_eq!(ext.call("DELETE", &format!("/v1/files?path={}", enc(&format!("{s}/passwd"))), None).status, 403);
    assert_eq!(ext.call("DELETE", &format!("/v1/files?path={}", enc(&r)), None).status, 403, "the root itself");
    assert_eq!(std::fs::read_to_string(secret.join("passwd")).unwrap(), "secret");
    assert_eq!(std::fs::read_dir(&secret).unwrap().count(), 1, "nothing created outside");
    assert!(root.join("out").exists(), "the link itself is still there");

    // Scopes: a read-only key reads and is refused writes and deletes.
    let reader = External::new(&fleet.api, create_key(&fleet, "reader", "files:read,bandwidth:read", &[]));
    reader.expect("GET", &format!("/v1/files?path={}", enc(&r)), None, 200);
    let body = json!({ "path": index, "content": "no" }).to_string();
    let reply = reader.call("PUT", "/v1/files/content", Some(&body));
    assert_eq!((reply.status, code(&reply)), (403, "INSUFFICIENT_SCOPE"), "{}", reply.raw);
    assert_eq!(reply.body["required_scope"], "files:write");
    let reply = reader.call("DELETE", &format!("/v1/files?path={}", enc(&index)), None);
    assert_eq!((reply.status, code(&reply)), (403, "INSUFFICIENT_SCOPE"), "{}", reply.raw);
    let reply = reader.call("POST", "/v1/files", Some(&new_file));
    assert_eq!((reply.status, code(&reply)), (403, "INSUFFICIENT_SCOPE"), "{}", reply.raw);
    assert_eq!(std::fs::read_to_string(root.join("site/index.html")).unwrap(), "<h1>new</h1>");
    let files_only = External::new(&fleet.api, create_key(&fleet, "files-only", "files:*", &[]));
    let reply = files_only.call("GET", "/v1/bandwidth", None);
    assert_eq!((reply.status, code(&reply)), (403, "INSUFFICIENT_SCOPE"), "{}", reply.raw);

    // Bandwidth: the 3 MiB went in (write) and out (read) through the agent's namespace.
    let (in1, out1, month1) = bandwidth(&reader);
    assert_eq!(month1, month);
    if in_namespace {
        assert!(in1 >= in0 + 3 * 1024 * 1024, "bytes in grew by the written file: {in0} → {in1}");
        assert!(out1 >= out0 + 3 * 1024 * 1024, "bytes out grew by the read file: {out0} → {out1}");
    } else {
        eprintln!("loopback mode: the agent's traffic is on lo, which is not counted");
    }
    let monthly = ext.expect("GET", &format!("/v1/bandwidth?period=monthly&month={month}"), None, 200);
    assert_eq!(monthly["period"], month.as_str());
    assert_eq!(monthly["domains"], json!([]));
    let interfaces = monthly["interfaces"].as_array().unwrap();
    assert!(interfaces.iter().all(|i| i["interface"] != "lo"), "{monthly}");
    let sum: u64 = interfaces.iter().map(|i| i["total_bytes"].as_u64().unwrap()).sum();
    assert_eq!(monthly["total_bytes"].as_u64().unwrap(), sum);
    let summary = ext.expect("GET", "/v1/bandwidth/summary", None, 200);
    if in_namespace {
        assert!(!summary["days"].as_array().unwrap().is_empty(), "{summary}");
    }
    let account = ext.expect("GET", "/v1/bandwidth/accounts/42", None, 200);
    assert!(account["bytes_used"].as_u64().unwrap() >= in1 + out1, "{account}");
    assert!(account["note"].is_string());
    assert_eq!(ext.call("GET", "/v1/bandwidth/accounts/a%20b", None).status, 404);
    assert_eq!(ext.call("GET", "/v1/bandwidth?month=2026-13", None).status, 400);
    assert_eq!(ext.call("GET", "/v1/bandwidth?period=yearly", None).status, 400);
    let empty = ext.expect("GET", "/v1/bandwidth?period=monthly&month=1999-01", None, 200);
    assert_eq!(empty["total_bytes"], 0);

    // An agent restart keeps the month.
    fleet.stop_agent(agent, false);
    fleet.start_agent(agent);
    fleet.wait_connected(&[node_id], Duration::from_secs(30));
    let (in2, out2, _) = flotilla_tests::harness::wait_for("bandwidth after restart", Duration::from_secs(20), || {
        let reply = ext.call("GET", "/v1/bandwidth", None);
        (reply.status == 200).then(|| {
            let d: &Value = &reply.body["data"];
            (d["total_bytes_in"].as_u64().unwrap(), d["total_bytes_out"].as_u64().unwrap(), ())
        })
    });
    assert!(in2 >= in1 && out2 >= out1, "a restart does not reset the month: {in1}/{out1} → {in2}/{out2}");
}

fn trash_list(ext: &External) -> (Vec<Value>, u64) {
    let reply = ext.call("GET", "/v1/files/trash?user_id=1&page=1&limit=50", None);
    assert_eq!((reply.status, reply.body["status"].as_str()), (200, Some("success")), "{}", reply.raw);
    (reply.body["data"].as_array().unwrap().clone(), reply.body["total"].as_u64().unwrap())
}

fn names(ext: &External, dir: &str) -> Vec<String> {
    let list = ext.expect("GET", &format!("/v1/files?user_id=1&show_hidden=1&path={}", enc(dir)), None, 200);
    list["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn deleted_files_go_to_the_trash_and_come_back() {
    let mut fleet = Fleet::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    std::fs::create_dir_all(root.join("site/css")).unwrap();
    let original: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(root.join("site/logo.bin"), &original).unwrap();
    std::fs::write(root.join("site/css/a.css"), "body{}").unwrap();
    let r = root.display().to_string();
    let agent = fleet.add_agent_configured("trash-1", &format!("[files]\nroots = [\"{r}\"]\n"));
    let node_id = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node_id], Duration::from_secs(30));
    let ext = External::new(&fleet.api, create_key(&fleet, "trash", "files:*", &[]));
    let logo = format!("{r}/site/logo.bin");

    // WHMCS's delete: permanent false moves to the trash, and the answer says so.
    let body = json!({ "user_id": 1, "paths": [logo], "permanent": false }).to_string();
    let reply = ext.call("DELETE", "/v1/files", Some(&body));
    assert_eq!((reply.status, reply.body["message"].as_str()), (200, Some("Moved to trash")), "{}", reply.raw);
    let trashed = &reply.body["data"]["trashed"][0];
    assert_eq!(reply.body["data"]["permanent"], false);
    let id = trashed["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(!root.join("site/logo.bin").exists());
    assert!(!names(&ext, &format!("{r}/site")).contains(&"logo.bin".to_string()), "gone from the listing");
    assert!(!names(&ext, &r).iter().any(|n| n.contains("trash")), "the trash is not listed, even with hidden files");

    // Listed and counted.
    let (items, total) = trash_list(&ext);
    assert_eq!(total, 1);
    let item = &items[0];
    assert_eq!((item["id"].as_str(), item["name"].as_str()), (Some(id.as_str()), Some("logo.bin")));
    assert_eq!((item["original_path"].as_str(), item["type"].as_str()), (Some(logo.as_str()), Some("file")));
    assert_eq!(item["size"], 70_000);
    assert!(item["deleted_at"].as_str().unwrap().ends_with('Z'), "{item}");
    let stats = ext.expect("GET", "/v1/files/trash/stats?user_id=1", None, 200);
    assert_eq!((stats["count"].as_u64(), stats["total_bytes"].as_u64()), (Some(1), Some(70_000)), "{stats}");
    assert_eq!(stats["roots"][0]["root"], r.as_str());

    // The trash is not reachable through the ordinary endpoints.
    let inside = format!("{r}/.flotilla-trash/{id}/entry");
    let reply = ext.call("GET", &format!("/v1/files/content?user_id=1&path={}", enc(&inside)), None);
    assert_eq!((reply.status, code(&reply)), (403, "FORBIDDEN"), "{}", reply.raw);
    let reply = ext.call("PUT", "/v1/files/content", Some(&json!({ "path": inside, "content": "x" }).to_string()));
    assert_eq!(reply.status, 403, "{}", reply.raw);
    let reply = ext.call("GET", &format!("/v1/files?path={}", enc(&format!("{r}/.flotilla-trash"))), None);
    assert_eq!(reply.status, 403, "{}", reply.raw);

    // Restore: the same bytes back where they were; a second restore of the id is 404.
    let restored = ext.expect("POST", &format!("/v1/files/trash/{id}/restore"), Some(r#"{"user_id": 1}"#), 200);
    assert_eq!(restored["restored_path"], logo.as_str());
    assert_eq!(std::fs::read(root.join("site/logo.bin")).unwrap(), original);
    let read = ext.expect("GET", &format!("/v1/files/content?path={}", enc(&logo)), None, 200);
    assert_eq!(read["encoding"], "base64");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(read["content"].as_str().unwrap()).unwrap(), original);
    assert_eq!(trash_list(&ext).1, 0);
    let reply = ext.call_at("POST", &format!("/v1/files/trash/{id}/restore"), Some(r#"{"user_id": 1}"#), now() + 1);
    assert_eq!(
        (reply.status, reply.body["status"].as_str(), code(&reply)),
        (404, Some("error"), "NOT_FOUND"),
        "{}",
        reply.raw
    );

    // A restore never replaces what is at the path now: 409.
    let body = json!({ "user_id": 1, "paths": [format!("{r}/site/css/a.css")], "permanent": false }).to_string();
    let css_id = ext.expect("DELETE", "/v1/files", Some(&body), 200)["trashed"][0]["id"].as_str().unwrap().to_string();
    std::fs::write(root.join("site/css/a.css"), "newer").unwrap();
    let reply = ext.call("POST", &format!("/v1/files/trash/{css_id}/restore"), Some("[]"));
    assert_eq!((reply.status, code(&reply)), (409, "CONFLICT"), "{}", reply.raw);
    assert_eq!(std::fs::read_to_string(root.join("site/css/a.css")).unwrap(), "newer");

    // Trash again (the document's ?path=, no permanent: the trash too) and delete one for good.
    ext.expect("DELETE", &format!("/v1/files?path={}", enc(&format!("{r}/site"))), None, 200);
    assert!(!root.join("site").exists());
    let (items, total) = trash_list(&ext);
    assert_eq!(total, 2);
    assert_eq!((items[0]["name"].as_str(), items[0]["type"].as_str()), (Some("site"), Some("folder")), "newest first");
    let site_id = items[0]["id"].as_str().unwrap().to_string();
    let gone = ext.expect("DELETE", &format!("/v1/files/trash/{site_id}?user_id=1"), None, 200);
    assert_eq!(gone["freed_bytes"], items[0]["size"]);
    let (items, _) = trash_list(&ext);
    assert_eq!(items.iter().map(|i| i["id"].as_str().unwrap()).collect::<Vec<_>>(), vec![css_id.as_str()]);
    let reply = ext.call_at("DELETE", &format!("/v1/files/trash/{site_id}?user_id=1"), None, now() + 1);
    assert_eq!((reply.status, code(&reply)), (404, "NOT_FOUND"), "{}", reply.raw);

    // Trash again and empty (WHMCS sends `[]` for a POST without fields).
    std::fs::write(root.join("old.txt"), "old").unwrap();
    let body = json!({ "user_id": 1, "paths": [format!("{r}/old.txt")], "permanent": false }).to_string();
    ext.expect("DELETE", "/v1/files", Some(&body), 200);
    let emptied = ext.expect("POST", "/v1/files/trash/empty", Some("[]"), 200);
    assert_eq!((emptied["deleted_count"].as_u64(), emptied["freed_bytes"].as_u64()), (Some(2), Some(9)), "{emptied}");
    assert_eq!(trash_list(&ext).1, 0);
    let stats = ext.expect("GET", "/v1/files/trash/stats", None, 200);
    assert_eq!((stats["count"].as_u64(), stats["total_bytes"].as_u64()), (Some(0), Some(0)));
    assert_eq!(std::fs::read_dir(root.join(".flotilla-trash")).unwrap().count(), 0);

    // permanent: true deletes for good.
    std::fs::write(root.join("gone.txt"), "x").unwrap();
    let body = json!({ "user_id": 1, "paths": [format!("{r}/gone.txt")], "permanent": true }).to_string();
    let reply = ext.call("DELETE", "/v1/files", Some(&body));
    assert_eq!((reply.status, reply.body["message"].as_str()), (200, Some("Deleted permanently")), "{}", reply.raw);
    assert_eq!(reply.body["data"]["permanent"], true);
    assert!(!root.join("gone.txt").exists());
    assert_eq!(trash_list(&ext).1, 0);

    // Bad ids: 404 in the family's envelope.
    for id in ["nope", "00000000000000000000000000000000", "..%2F..%2Fetc"] {
        let reply = ext.call("DELETE", &format!("/v1/files/trash/{id}?user_id=1"), None);
        assert_eq!(
            (reply.status, reply.body["status"].as_str(), code(&reply)),
            (404, Some("error"), "NOT_FOUND"),
            "{id}: {}",
            reply.raw
        );
        let reply = ext.call("POST", &format!("/v1/files/trash/{id}/restore"), None);
        assert_eq!((reply.status, code(&reply)), (404, "NOT_FOUND"), "{id}: {}", reply.raw);
    }
    assert_eq!(ext.call("GET", "/v1/files/trash?limit=0", None).status, 400);

    // Scopes: reading the trash needs files:read, restoring files:write, removing files:delete.
    let reader = External::new(&fleet.api, create_key(&fleet, "reader", "files:read", &[]));
    reader.expect("GET", "/v1/files/trash", None, 200);
    reader.expect("GET", "/v1/files/trash/stats", None, 200);
    for (method, path, scope) in [
        ("POST", format!("/v1/files/trash/{css_id}/restore"), "files:write"),
        ("DELETE", format!("/v1/files/trash/{css_id}"), "files:delete"),
        ("POST", "/v1/files/trash/empty".to_string(), "files:delete"),
    ] {
        let reply = reader.call(method, &path, None);
        assert_eq!((reply.status, code(&reply)), (403, "INSUFFICIENT_SCOPE"), "{method} {path}: {}", reply.raw);
        assert_eq!(reply.body["required_scope"], scope);
    }
}
