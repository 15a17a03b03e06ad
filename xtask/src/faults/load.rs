//! The traffic every fault scenario runs under, shaped like a shop's: products created with the
//! catalog's fields (SKU, currency, category, attributes, stock, draft or published), each then
//! changed several times, with and without `If-Match` (a conditional stock adjustment, a
//! publication or price change, a conditional rename), every fifth one deleted (conditionally),
//! a customer registered every tenth round, a category renamed now and then, and pages read
//! back. So every aggregate gets four or five events, and ordering, gap healing and deletes run
//! under every fault. Every answer is sorted into acknowledged, unavailable, refused or a
//! violation of the rules, so the checks can hold the store to every acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{PORTS, REQUEST_TIMEOUT};

/// Rounds per second of the background writer: one product created and changed three or four
/// times, so about 110 writes a second, plus a registration every tenth round.
const WRITE_RATE: u64 = 25;

/// What the load saw: acknowledged product ids, the version each acknowledged change reached,
/// and any answer that breaks the rules (a 5xx other than 503-with-Retry-After, or an answer
/// slower than the time limit).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) acknowledged: Vec<String>,
    /// `(aggregate id, version)` of every acknowledged change (products and the category).
    pub(super) acknowledged_changes: Vec<(String, i64)>,
    /// Of those, how many were sent with `If-Match`, and how many were deletions.
    pub(super) conditional: u64,
    pub(super) deleted: u64,
    /// Ids of the acknowledged user registrations.
    pub(super) registered: Vec<String>,
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
    /// SKUs and usernames are unique: every run gets its own prefix.
    run: String,
    category: Option<String>,
    /// The command-apis and query-apis to spread rounds over (round `n` uses `n % len`).
    command_addrs: Vec<&'static str>,
    query_addrs: Vec<&'static str>,
    command_addr: &'static str,
    query_addr: &'static str,
}

/// The kinds of change the load makes; which ones carry `If-Match` is counted.
enum Precondition {
    None,
    IfMatch(i64),
}

impl Load {
    /// The load against the suite's one command-api and query-api.
    pub(super) fn start(token: String) -> Self {
        Self::start_on(token, vec![PORTS.command_api], vec![PORTS.query_api])
    }

    /// The load spread over several command-apis and query-apis.
    pub(super) fn start_on(token: String, command_addrs: Vec<&'static str>, query_addrs: Vec<&'static str>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn({
            let (stop, tally) = (stop.clone(), tally.clone());
            async move {
                let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT * 3).build().expect("client");
                let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
                let (command_addr, query_addr) = (command_addrs[0], query_addrs[0]);
                let mut writer = Writer {
                    client,
                    token,
                    tally,
                    run,
                    category: None,
                    command_addrs,
                    query_addrs,
                    command_addr,
                    query_addr,
                };
                writer.category = writer.create_category().await;
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / WRITE_RATE));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    n += 1;
                    let mut writer = writer.clone();
                    writer.command_addr = writer.command_addrs[n as usize % writer.command_addrs.len()];
                    writer.query_addr = writer.query_addrs[n as usize % writer.query_addrs.len()];
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
        for _ in 0..40 {
            if let Some(created) = self.send("POST category", self.post("/api/v1/categories", &body)).await {
                return created["id"].as_str().map(str::to_owned);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Creates product `n`, then changes it: a stock adjustment with `If-Match`, a publication
    /// (drafts) or price change without, a rename with `If-Match`, and for every fifth a
    /// deletion with `If-Match`; registers a customer every tenth round, renames the category
    /// every 20th, and reads the product (`min_version`) and a page back.
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
        if n.is_multiple_of(10) {
            self.register(n).await;
        }
        if let (Some(category), 0) = (&self.category, n % 20) {
            let rename = self.patch(&format!("/api/v1/categories/{category}"), &json!({"name": format!("Fault {n}")}));
            self.acknowledge(category, None, self.send("PATCH category", rename).await);
        }
        let created = self.send("POST product", self.post("/api/v1/products", &product)).await;
        let Some(id) = created.as_ref().and_then(|c| c["id"].as_str()).map(str::to_owned) else { return };
        self.tally.lock().expect("tally").acknowledged.push(id.clone());
        let path = format!("/api/v1/products/{id}");
        let adjustment = json!({"delta": if n.is_multiple_of(4) { -2 } else { 3 }, "reason": "fault load"});
        let adjust = self.post(&format!("{path}/stock-adjustments"), &adjustment);
        if self.change(&id, "POST stock", adjust, Precondition::IfMatch(1)).await.is_none() {
            return;
        }
        let change = if draft { json!({"status": "published"}) } else { json!({"price": "10.49"}) };
        let Some(version) = self.change(&id, "PATCH product", self.patch(&path, &change), Precondition::None).await
        else {
            return;
        };
        let rename = self.patch(&path, &json!({"name": format!("Fault {n} renamed")}));
        let Some(version) = self.change(&id, "PATCH product", rename, Precondition::IfMatch(version)).await else {
            return;
        };
        let url = format!("http://{}/api/v1/products/{id}?min_version={version}", self.query_addr);
        self.send("GET product", self.client.get(url)).await;
        if n.is_multiple_of(5) {
            let delete = self.client.delete(format!("http://{}{path}", self.command_addr)).bearer_auth(&self.token);
            if self.change(&id, "DELETE product", delete, Precondition::IfMatch(version)).await.is_some() {
                self.tally.lock().expect("tally").deleted += 1;
            }
        }
        self.send("GET", self.client.get(format!("http://{}/api/v1/products?limit=5", self.query_addr))).await;
    }

    /// Sends a change of aggregate `id` (with `If-Match` when given) and returns the version
    /// it reached if acknowledged. A deletion answers 204 without a body: it reached the
    /// version after the one it was conditional on.
    async fn change(
        &self,
        id: &str,
        what: &str,
        request: reqwest::RequestBuilder,
        precondition: Precondition,
    ) -> Option<i64> {
        let (request, expected) = match precondition {
            Precondition::None => (request, None),
            Precondition::IfMatch(version) => (request.header("if-match", format!("\"{version}\"")), Some(version)),
        };
        let version = self.acknowledge(id, expected, self.send(what, request).await)?;
        if expected.is_some() {
            self.tally.lock().expect("tally").conditional += 1;
        }
        Some(version)
    }

    /// A customer registration (open: no token), counted when acknowledged.
    async fn register(&self, n: u64) {
        let body = json!({
            "username": format!("f{}-{n}", self.run), "email": format!("f{}-{n}@example.com", self.run),
            "password": "fault-load-password",
        });
        let request = self.client.post(format!("http://{}/api/v1/users", self.command_addr)).json(&body);
        if let Some(id) = self.send("POST user", request).await.and_then(|r| r["id"].as_str().map(str::to_owned)) {
            self.tally.lock().expect("tally").registered.push(id);
        }
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.post(format!("http://{}{path}", self.command_addr)).bearer_auth(&self.token).json(body)
    }

    fn patch(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.patch(format!("http://{}{path}", self.command_addr)).bearer_auth(&self.token).json(body)
    }

    /// Records an acknowledged change of `id` and returns the version it reached: the answer's
    /// `version`, or for an answer without a body (a deletion) the one after `expected`.
    fn acknowledge(&self, id: &str, expected: Option<i64>, answer: Option<Value>) -> Option<i64> {
        let version = match answer? {
            Value::Null => expected? + 1,
            answer => answer["version"].as_i64()?,
        };
        self.tally.lock().expect("tally").acknowledged_changes.push((id.to_owned(), version));
        Some(version)
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
            // An answer without a (JSON) body, such as a deletion's 204, is Null.
            Some(response.json::<Value>().await.unwrap_or(Value::Null))
        } else {
            None
        }
    }
}
