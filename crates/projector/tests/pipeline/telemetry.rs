//! One trace from the HTTP request to the read model, and the pipeline's metrics.
//!
//! The trace test runs command-api in this process (with the same tracing setup as its main) and
//! the projector as a child process exporting its spans over OTLP/HTTP (JSON) to a collector
//! this test serves: the caller's trace id must reach the event's Kafka header and the
//! projector's `project_event` span, whose parent is the span named in that header.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use rdkafka::message::{Headers, Message};
use reqwest::Client;
use serde_json::{json, Value};
use service_runtime::settings::LogFormat;
use service_runtime::telemetry;

use crate::end_to_end::{admin_token, start_apis};
use crate::support::{eventually, Pipeline};

const CALLER_TRACE_ID: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const CALLER_SPAN_ID: &str = "051581bf3cb55c13";

/// An OTLP/HTTP JSON receiver: every span it was sent, as (name, trace id, parent span id).
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Collector {
    async fn start(&self) -> String {
        async fn receive(State(collector): State<Collector>, Json(export): Json<Value>) -> Json<Value> {
            let mut spans = collector.spans.lock().unwrap();
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let field = |name: &str| span[name].as_str().unwrap_or_default().to_owned();
                        spans.push((field("name"), field("traceId"), field("parentSpanId")));
                    }
                }
            }
            Json(json!({}))
        }
        let app = Router::new().route("/v1/traces", post(receive)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn spans_named(&self, name: &str) -> Vec<(String, String, String)> {
        self.spans.lock().unwrap().iter().filter(|s| s.0 == name).cloned().collect()
    }
}

#[tokio::test]
async fn a_callers_trace_runs_through_the_kafka_header_into_the_projectors_span() {
    let _tracing = telemetry::init_tracing("command-api", LogFormat::Pretty);
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let pipeline = Pipeline::new().await;
    let projector = pipeline.projector_with_env(
        "all",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    projector.wait_until_assigned().await;
    let apis = start_apis(&pipeline).await;
    let (_, token) = admin_token(&pipeline, &apis).await;

    let created = Client::new()
        .post(format!("{}/api/v1/products", apis.command))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .json(&json!({"name": "Traced lamp", "price": "5.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // The Kafka message of that event carries the caller's trace, under command-api's span.
    let reader = pipeline.reader(&pipeline.topic);
    let header = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let message = reader.recv().await.expect("a message");
            if message.key() != Some(id.as_bytes()) {
                continue; // the admin's user events
            }
            let headers = message.headers().expect("headers");
            let traceparent =
                headers.iter().find(|h| h.key == "traceparent").and_then(|h| h.value).expect("traceparent");
            break String::from_utf8(traceparent.to_vec()).unwrap();
        }
    })
    .await
    .expect("the product's message is published");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts[1], CALLER_TRACE_ID, "{header}");
    let command_span_id = parts[2].to_owned();
    assert_ne!(command_span_id, CALLER_SPAN_ID, "{header}");

    // The projector's span for that event is in the same trace, a child of that span.
    eventually("the projector exports its project_event span", Duration::from_secs(30), || async {
        collector
            .spans_named("project_event")
            .iter()
            .any(|(_, trace, parent)| trace == CALLER_TRACE_ID && *parent == command_span_id)
    })
    .await;
    // Spans of events written without a caller's trace are traces of their own.
    let others = collector.spans_named("project_event");
    assert!(others.iter().any(|(_, trace, _)| trace != CALLER_TRACE_ID), "{others:?}");
}

#[tokio::test]
async fn metrics_cover_appends_pool_and_per_partition_consumer_lag() {
    let pipeline = Pipeline::new().await;
    let projector = pipeline.projector("all", &[]);
    projector.wait_until_assigned().await;
    let apis = start_apis(&pipeline).await;
    let (_, token) = admin_token(&pipeline, &apis).await;
    let client = Client::new();
    for n in 0..3 {
        let created = client
            .post(format!("{}/api/v1/products", apis.command))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Metered {n}"), "price": "1.00"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let text = client.get(format!("{}/metrics", apis.command)).send().await.unwrap().text().await.unwrap();
    let appended =
        sample(&text, "events_appended_total", &["aggregate_type=\"Product\"", "event_type=\"ProductCreated\""]);
    assert_eq!(appended, Some(3.0), "{text}");
    assert!(sample(&text, "db_pool_connections", &["state=\"idle\""]).is_some(), "{text}");
    assert!(sample(&text, "db_pool_connections", &["state=\"in_use\""]).is_some(), "{text}");

    // librdkafka reports statistics every 5 s: a lag gauge per partition the projector holds.
    eventually("the projector reports consumer lag per partition", Duration::from_secs(30), || async {
        let text = reqwest::get(projector.metrics_url()).await.unwrap().text().await.unwrap();
        text.lines().filter(|l| l.starts_with("projector_consumer_lag{") && l.contains("partition=\"")).count() == 6
    })
    .await;
    let text = reqwest::get(projector.metrics_url()).await.unwrap().text().await.unwrap();
    assert!(sample(&text, "db_pool_connections", &["state=\"idle\""]).is_some(), "{text}");
    assert!(sample(&text, "publisher_lag_events", &[]).is_some(), "{text}");
}

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}
