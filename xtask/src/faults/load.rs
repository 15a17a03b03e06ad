//! The traffic every fault scenario runs under: products written at a steady rate over HTTP
//! and read back, with every answer sorted into acknowledged, unavailable, refused or a
//! violation of the rules.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{PORTS, REQUEST_TIMEOUT};

/// Requests per second of the background writer.
const WRITE_RATE: u64 = 40;
const COMMAND_ADDR: &str = PORTS.command_api;
const QUERY_ADDR: &str = PORTS.query_api;

/// What the load saw: acknowledged product ids, and any answer that breaks the rules (a 5xx
/// other than 503-with-Retry-After, or an answer slower than the time limit).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) acknowledged: Vec<String>,
    pub(super) unavailable: u64,
    pub(super) refused: u64,
    pub(super) violations: Vec<String>,
}

/// Writes products at a steady rate (and reads them back) until stopped. Connection errors
/// count as `refused` (a killed server cannot answer); they are not violations.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub(super) fn start(token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn({
            let (stop, tally) = (stop.clone(), tally.clone());
            async move {
                let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT * 3).build().expect("client");
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / WRITE_RATE));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    n += 1;
                    let (client, tally, token) = (client.clone(), tally.clone(), token.clone());
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let write = client
                            .post(format!("http://{COMMAND_ADDR}/api/v1/products"))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"name": format!("Fault {n}"), "price": "9.99"}))
                            .send()
                            .await;
                        record(&tally, "POST", sent, write, true).await;
                        let sent = Instant::now();
                        let read = client.get(format!("http://{QUERY_ADDR}/api/v1/products?limit=5")).send().await;
                        record(&tally, "GET", sent, read, false).await;
                    });
                }
            }
        });
        Self { stop, tally, task }
    }

    pub(super) async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        // Let requests still in flight land.
        tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_secs(1)).await;
        std::mem::take(&mut *self.tally.lock().expect("tally"))
    }
}

async fn record(
    tally: &Mutex<Tally>,
    what: &str,
    sent: Instant,
    result: reqwest::Result<reqwest::Response>,
    is_write: bool,
) {
    let elapsed = sent.elapsed();
    let response = match result {
        Ok(response) => response,
        Err(_) => {
            tally.lock().expect("tally").refused += 1;
            return;
        }
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let id = if is_write && status == 201 {
        response.json::<serde_json::Value>().await.ok().and_then(|b| b["id"].as_str().map(str::to_owned))
    } else {
        None
    };
    let mut tally = tally.lock().expect("tally");
    if elapsed > REQUEST_TIMEOUT + Duration::from_secs(2) {
        tally.violations.push(format!("{what} answered after {elapsed:?}"));
    }
    match status {
        503 if retry_after => tally.unavailable += 1,
        500..=599 => tally.violations.push(format!("{what} answered {status}")),
        _ => {}
    }
    if let Some(id) = id {
        tally.acknowledged.push(id);
    }
}
