//! The real `command-api` binary under a registration flood: password hashing is bounded by
//! `PASSWORD_HASH_CONCURRENCY`, so its peak memory stays within budget however many arrive.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use test_support::TestDatabase;

/// What the whole process may peak at: hashing's 128 MiB (6 × 19 MiB) plus the rest of the
/// service with room to spare, well inside a 512 MiB pod.
const PEAK_RSS_BUDGET_KIB: u64 = 256 * 1024;

/// The binary, stopped (and waited for) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn two_hundred_concurrent_registrations_keep_peak_rss_within_budget() {
    let database = TestDatabase::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_command-api"))
            .args(["--addr", &format!("127.0.0.1:{port}"), "--database-url", &database.url])
            .args(["--token-signing-key", test_support::http::TEST_SIGNING_KEY])
            // Every registration comes from 127.0.0.1: lift the per-client limit so the flood
            // reaches the hashing.
            .args(["--registrations-per-client", "100000"])
            .env("CATALOG_ENV", "development")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start command-api"),
    );
    let pid = process.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    test_support::eventually("command-api serves", Duration::from_secs(30), || async {
        client.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let before = peak_rss_kib(pid);

    let requests = (0..200).map(|n| {
        // Every tenth name repeats an earlier one: 409s are part of the mix.
        let name = if n % 10 == 9 { format!("flood{}", n - 1) } else { format!("flood{n}") };
        let body = serde_json::json!({"username": name, "email": format!("{name}@example.com"), "password": "flood-password-1"});
        client.post(format!("{base}/api/v1/users")).json(&body).send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut counts = std::collections::BTreeMap::new();
    for response in responses {
        let status = response.expect("an answer").status().as_u16();
        assert!([201, 409, 429, 503].contains(&status), "unexpected status {status}");
        *counts.entry(status).or_insert(0) += 1;
    }
    let peak = peak_rss_kib(pid);
    eprintln!("answers {counts:?}; peak RSS {} MiB (before the flood {} MiB)", peak / 1024, before / 1024);
    assert!(counts.get(&201).copied().unwrap_or(0) > 0, "some registrations went through: {counts:?}");
    assert!(peak < PEAK_RSS_BUDGET_KIB, "peak RSS {} MiB is over the budget", peak / 1024);
    if counts.contains_key(&503) {
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("password_hash_rejections_total"), "the 503s are counted");
    }
}

/// `--help` lists `DATABASE_URL` but never its value: it usually carries a password.
#[test]
fn help_does_not_print_the_database_password() {
    let output = Command::new(env!("CARGO_BIN_EXE_command-api"))
        .arg("--help")
        .env("DATABASE_URL", "postgres://catalog:hunter2-secret@db.internal/catalog")
        .env("IDEMPOTENCY_KEY_SECRET", "an-idempotency-secret-of-32-bytes-or-more")
        .output()
        .expect("run command-api --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(!help.contains("hunter2-secret"), "{help}");
    assert!(!help.contains("an-idempotency-secret"), "{help}");
}
