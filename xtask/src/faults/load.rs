//! The traffic every fault scenario runs under, shaped like a shop's: products created with the
//! catalog's fields (SKU, currency, category, attributes, stock, draft or published), each then
//! changed a few times (a stock adjustment, a publication), a category renamed now and then,
//! and pages read back. Every answer is sorted into acknowledged, unavailable, refused or a
//! violation of the rules, so the checks can hold the store to every acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{PORTS, REQUEST_TIMEOUT};

/// Products created per second by the background writer (each followed by one or two changes).
const WRITE_RATE: u64 = 40;
const COMMAND_ADDR: &str = PORTS.command_api;
const QUERY_ADDR: &str = PORTS.query_api;

/// What the load saw: acknowledged product ids, the version each acknowledged change reached,
/// and any answer that breaks the rules (a 5xx other than 503-with-Retry-After, or an answer
/// slower than the time limit).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) acknowledged: Vec<String>,
    /// `(aggregate id, version)` of every acknowledged change (products and the category).
    pub(super) acknowledged_changes: Vec<(String, i64)>,
    pub(super) unavailable: u64,
    pub(super) refused: u64,
    pub(super) violations: Vec<String>,
}

/// Writes at a steady rate (and reads back) until stopped. Connection errors count as
/// `refused` (a killed server cannot answer); they are not violations.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

/// One client, one token, one category and one SKU prefix for a load run.
#[derive(Clone)]
struct Writer {
    client: reqwest::Client,
    token: String,
    tally: Arc<Mutex<Tally>>,
    /// SKUs are unique across the catalog: every run gets its own prefix.
    run: String,
    category: Option<String>,
}

impl Load {
    pub(super) fn start(token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn({
            let (stop, tally) = (stop.clone(), tally.clone());
            async move {
                let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT * 3).build().expect("client");
                let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
                let mut writer = Writer { client, token, tally, run, category: None };
                writer.category = writer.create_category().await;
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / WRITE_RATE));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    n += 1;
                    let writer = writer.clone();
                    tokio::spawn(async move { writer.round(n).await });
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

impl Writer {
    /// The category every product of the run is filed under (none if it could not be created
    /// before the fault began: products are then created without one).
    async fn create_category(&self) -> Option<String> {
        let body = json!({"name": "Fault load", "slug": format!("fault-load-{}", self.run)});
        for _ in 0..20 {
            if let Some(created) = self.send("POST category", self.post("/api/v1/categories", &body)).await {
                return created["id"].as_str().map(str::to_owned);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Creates product `n`, then changes it (stock, and publication for drafts), renames the
    /// category every 20th round, and reads a page.
    async fn round(&self, n: u64) {
        let draft = n.is_multiple_of(2);
        let (currency, price) = if n.is_multiple_of(3) { ("JPY", "999") } else { ("EUR", "9.99") };
        let mut product = json!({
            "name": format!("Fault {n}"), "price": price, "currency": currency,
            "sku": format!("F-{}-{n}", self.run), "on_hand": 5,
            "attributes": {"batch": format!("b{}", n % 7)},
            "status": if draft { "draft" } else { "published" },
        });
        if let Some(category) = &self.category {
            product["category_ids"] = json!([category]);
        }
        let created = self.send("POST product", self.post("/api/v1/products", &product)).await;
        if let Some(id) = created.as_ref().and_then(|c| c["id"].as_str()) {
            self.tally.lock().expect("tally").acknowledged.push(id.to_owned());
            let adjustment = json!({"delta": if n.is_multiple_of(4) { -2 } else { 3 }, "reason": "fault load"});
            let path = format!("/api/v1/products/{id}/stock-adjustments");
            self.acknowledge(id, self.send("POST stock", self.post(&path, &adjustment)).await);
            if draft {
                let publish = self.patch(&format!("/api/v1/products/{id}"), &json!({"status": "published"}));
                self.acknowledge(id, self.send("PATCH product", publish).await);
            }
        }
        if let (Some(category), 0) = (&self.category, n % 20) {
            let rename = self.patch(&format!("/api/v1/categories/{category}"), &json!({"name": format!("Fault {n}")}));
            self.acknowledge(category, self.send("PATCH category", rename).await);
        }
        self.send("GET", self.client.get(format!("http://{QUERY_ADDR}/api/v1/products?limit=5"))).await;
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.post(format!("http://{COMMAND_ADDR}{path}")).bearer_auth(&self.token).json(body)
    }

    fn patch(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.patch(format!("http://{COMMAND_ADDR}{path}")).bearer_auth(&self.token).json(body)
    }

    fn acknowledge(&self, id: &str, answer: Option<Value>) {
        if let Some(version) = answer.and_then(|a| a["version"].as_i64()) {
            self.tally.lock().expect("tally").acknowledged_changes.push((id.to_owned(), version));
        }
    }

    /// Sends the request and tallies the answer; the body of a 2xx answer, if JSON.
    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> Option<Value> {
        let sent = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                self.tally.lock().expect("tally").refused += 1;
                return None;
            }
        };
        let elapsed = sent.elapsed();
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        {
            let mut tally = self.tally.lock().expect("tally");
            if elapsed > REQUEST_TIMEOUT + Duration::from_secs(2) {
                tally.violations.push(format!("{what} answered after {elapsed:?}"));
            }
            match status {
                503 if retry_after => tally.unavailable += 1,
                500..=599 => tally.violations.push(format!("{what} answered {status}")),
                _ => {}
            }
        }
        if (200..300).contains(&status) {
            response.json::<Value>().await.ok()
        } else {
            None
        }
    }
}
