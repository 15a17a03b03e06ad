//! Logging, tracing and metrics setup, done once at the start of `main`.
//!
//! Every span carries W3C trace context (OpenTelemetry, through `tracing-opentelemetry`): a
//! trace that starts at an HTTP request continues through the event's metadata and Kafka
//! headers into the projector. Spans are exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf`, the
//! default, or `http/json`; the SDK's other `OTEL_*` variables apply too); without it, trace ids
//! are still made and propagated, and appear in the logs as `trace_id`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

use crate::settings::LogFormat;

/// The name of the W3C trace context header, in HTTP and in Kafka headers alike.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider; [`Tracing::shutdown`] exports the spans still buffered.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is buffered and stops the exporter. Call once, before the process exits.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::debug!(%error, "tracer provider shutdown");
        }
    }
}

/// Installs the global `tracing` subscriber (`RUST_LOG` filters, default `info`) with the
/// OpenTelemetry layer, and the W3C trace-context propagator. `service` names the process in
/// exported spans (`OTEL_SERVICE_NAME` overrides it).
pub fn init_tracing(service: &'static str, format: LogFormat) -> Tracing {
    let provider = tracer_provider(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Trace context must not depend on the log level: the OpenTelemetry layer sees every span
    // at `info` and above whatever RUST_LOG (which filters only the log output) says.
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_filter(LevelFilter::INFO);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    // A second init (tests building several apps in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(otel).with(logs).try_init();
    Tracing { provider }
}

fn tracer_provider(service: &'static str) -> SdkTracerProvider {
    // `with_service_name` overrides what the SDK's detectors read from OTEL_SERVICE_NAME, so
    // the variable is applied here, over the binary's name.
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| service.to_owned());
    let resource = Resource::builder().with_service_name(name).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        return builder.build();
    };
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    match opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(protocol).build() {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(error) => {
            // Telemetry must not keep the service from starting; say so loudly instead.
            eprintln!("OTLP export to {endpoint} disabled: {error}");
            builder.build()
        }
    }
}

/// Makes `traceparent` (when it is a valid W3C header) the parent of `span`, and records the
/// span's trace id in its `trace_id` field (declare it `tracing::field::Empty`) for the logs.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// The W3C `traceparent` naming the current span, to carry the trace on (event metadata,
/// Kafka headers). None outside any traced span.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Latency buckets in seconds, from sub-millisecond cache hits to slow writes.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global Prometheus recorder and returns the handle `/metrics` renders.
/// Later calls in the same process (tests building several apps) get the same handle, so every
/// app's `/metrics` shows what the global recorder counted; a detached recorder is returned
/// only if something else installed the global one.
///
/// The recorder keeps every histogram sample until *upkeep* folds it into the buckets, and
/// `install_recorder` (unlike the exporter's own HTTP listener) runs upkeep only when
/// `/metrics` is scraped. Unscraped, memory would grow with every request (the soak benchmark
/// showed it), so a small thread runs it on an interval; a thread rather than a task because
/// the handle outlives any one Tokio runtime in tests.
pub fn init_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let builder = || {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
    };
    HANDLE
        .get_or_init(|| {
            let handle = builder().install_recorder().unwrap_or_else(|_| builder().build_recorder().handle());
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}
