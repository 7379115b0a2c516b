//! Telemetry set up in one place: logs, traces and the `/metrics` registry's HTTP side.
//!
//! - Logs: `LOG_FORMAT=json` switches to JSON lines (plain text otherwise); `RUST_LOG` filters
//!   them (default `info`). A line inside an order's work carries the spans around it, and with
//!   them the order's `trace_id` and `correlation_id`.
//! - Traces: exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
//!   set, by `OTEL_EXPORTER_OTLP_PROTOCOL` `grpc` (default) or `http/protobuf`. The other standard
//!   variables apply as the OpenTelemetry SDK reads them: `OTEL_SERVICE_NAME` (default: the
//!   binary's name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (+ `_ARG`),
//!   `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`,
//!   `..._TIMEOUT`. Without an endpoint no OpenTelemetry layer is installed at all, so spans cost
//!   what plain `tracing` spans cost. `RUST_LOG` does not decide what is traced: the exporter has
//!   its own filter (every `info` span of this workspace).
//! - Every exported span of an order carries its `correlation_id`, handed down as W3C baggage
//!   (see [`contoso_telemetry::context`]).
//!
//! [`Telemetry::shutdown`] flushes the spans still buffered; every binary calls it on its way out.

use std::{
    fmt,
    future::Future,
    sync::{Arc, LazyLock},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use contoso_telemetry::{
    CORRELATION_ID, Parent,
    metrics::{self, Counters, Histograms, Labels, label},
};
use opentelemetry::{
    KeyValue,
    baggage::BaggageExt,
    trace::{Span as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor},
};
use tokio::time::Instant;
use tracing::{Instrument, Level, field};
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, fmt as logfmt, layer::SubscriberExt, util::SubscriberInitExt,
};

/// The version every span and resource names.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long [`Telemetry::shutdown`] waits for the last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How traces leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention, path `/v1/traces`).
    HttpProtobuf,
}

/// What the process exports; shut it down before exiting so buffered spans are not lost.
#[must_use = "call shutdown() before the process exits, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered (within a few seconds) and stops exporting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The batch processor's thread hands its last batch to this runtime, so wait off it.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("flushing the last spans failed: {error}"),
            Err(error) => eprintln!("flushing the last spans failed: {error}"),
        }
    }
}

/// Logs only, for command-line tools: `LOG_FORMAT` and `RUST_LOG` as for the services, no traces.
/// Later calls (and [`init`] after it) keep the first subscriber.
pub fn init_logs() {
    let _ = tracing_subscriber::registry()
        .with(log_layer(json_logs(&env)))
        .try_init();
}

/// Installs logs and, when the environment asks for it, OTLP trace export for `service` (the
/// default `service.name`). Must run inside the Tokio runtime. Fails on a variable it cannot
/// honour (an unknown protocol, sampler or exporter), naming it. When a subscriber is already
/// installed (several services in one process), it changes nothing and exports nothing more.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    let protocol = export_protocol(env)?;
    let Some(protocol) = protocol else {
        init_logs();
        return Ok(Telemetry { provider: None });
    };
    let provider = tracer_provider(service, protocol)?;
    let tracer = provider.tracer(service);
    // Without the per-span extras (thread name and id, busy/idle time measured on every poll):
    // they cost on every span and say little about an order.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(traced_targets());
    let installed = tracing_subscriber::registry()
        .with(log_layer(json_logs(&env)))
        .with(traces)
        .try_init();
    if installed.is_err() {
        let _ = provider.shutdown();
        return Ok(Telemetry { provider: None });
    }
    tracing::info!(?protocol, service, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn json_logs(lookup: &impl Fn(&str) -> Option<String>) -> bool {
    lookup("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"))
}

fn log_layer<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if json {
        logfmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed()
    } else {
        logfmt::layer()
            .with_target(false)
            .fmt_fields(PlainFields)
            .with_filter(filter)
            .boxed()
    }
}

/// Plain log fields without the spans' dotted semantic-convention attributes (`otel.kind`,
/// `rpc.method`, `messaging.system`, ...): those are for the trace, and would bury the ids a
/// reader of the log looks for (`trace_id`, `correlation_id`, ...).
#[derive(Debug, Clone, Copy)]
struct PlainFields;

impl<'writer> logfmt::FormatFields<'writer> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: logfmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut logfmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        self.format_fields(logfmt::format::Writer::new(&mut added), fields)?;
        if !added.is_empty() {
            if !current.fields.is_empty() {
                current.fields.push(' ');
            }
            current.fields.push_str(&added);
        }
        Ok(())
    }
}

struct PlainVisitor<'writer> {
    writer: logfmt::format::Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl tracing::field::Visit for PlainVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name().contains('.') {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{value:?}")
        } else {
            write!(self.writer, "{separator}{}={value:?}", field.name())
        };
    }
}

/// What is traced: `info` spans and up, but none of the libraries' own (an HTTP/2 frame is not
/// part of an order, and the exporter's own calls must not trace themselves).
fn traced_targets() -> Targets {
    Targets::new().with_default(Level::INFO).with_targets(
        [
            "h2",
            "hyper",
            "hyper_util",
            "tonic",
            "tower",
            "tower_http",
            "async_nats",
            "redis",
            "diesel",
            "tokio_postgres",
            "opentelemetry",
            "opentelemetry_sdk",
            "opentelemetry_otlp",
        ]
        .map(|target| (target, tracing::level_filters::LevelFilter::OFF)),
    )
}

/// Whether to export traces and how, from the standard variables `lookup` reads. `None`: no
/// endpoint is configured, or export is switched off (`OTEL_SDK_DISABLED=true`,
/// `OTEL_TRACES_EXPORTER=none`). Also checks the variables the SDK reads by itself, since it
/// would silently fall back on a value it does not understand.
pub fn export_protocol(
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Protocol>> {
    let var = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => anyhow::bail!(
            "OTEL_TRACES_EXPORTER={other:?} is not supported: use \"otlp\" or \"none\""
        ),
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let protocol =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let protocol = match protocol.as_deref() {
        None | Some("grpc") => Protocol::Grpc,
        Some("http/protobuf") => Protocol::HttpProtobuf,
        Some(other) => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use \"grpc\" or \"http/protobuf\""
        ),
    };
    if let Some(sampler) = var("OTEL_TRACES_SAMPLER") {
        let ratio = matches!(
            sampler.as_str(),
            "traceidratio" | "parentbased_traceidratio"
        );
        anyhow::ensure!(
            ratio
                || matches!(
                    sampler.as_str(),
                    "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off"
                ),
            "OTEL_TRACES_SAMPLER={sampler:?} is not supported: use always_on, always_off, \
             traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        );
        if ratio && let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
            let valid = arg.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r));
            anyhow::ensure!(
                valid,
                "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio between 0 and 1"
            );
        }
    }
    if let Some(delay) = var("OTEL_BSP_SCHEDULE_DELAY") {
        anyhow::ensure!(
            delay.parse::<u64>().is_ok(),
            "OTEL_BSP_SCHEDULE_DELAY={delay:?} is not a whole number of milliseconds"
        );
    }
    Ok(Some(protocol))
}

fn tracer_provider(service: &'static str, protocol: Protocol) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        Protocol::HttpProtobuf => {
            use opentelemetry_otlp::WithExportConfig as _;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
        }
    }
    .context("configuring the OTLP span exporter from OTEL_EXPORTER_OTLP_*")?;
    let exporter = OnRuntime {
        exporter: Arc::new(exporter),
        runtime: tokio::runtime::Handle::try_current()
            .context("trace export needs to be set up inside the Tokio runtime")?,
    };
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none_or(|name| name.trim().is_empty()) {
        resource = resource.with_service_name(service);
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", VERSION))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Correlated(BatchSpanProcessor::builder(exporter).build()))
        .with_resource(resource)
        .build())
}

/// Runs the exporter's calls on the application's Tokio runtime. The batch processor exports from
/// a thread of its own, where neither the tonic channel nor the hyper client can do I/O.
#[derive(Debug)]
struct OnRuntime {
    exporter: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let exporter = Arc::clone(&self.exporter);
        let task = self
            .runtime
            .spawn(async move { exporter.export(batch).await });
        async move {
            task.await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while building the provider, before the exporter is shared.
        if let Some(exporter) = Arc::get_mut(&mut self.exporter) {
            exporter.set_resource(resource);
        }
    }
}

/// Stamps the correlation id a span's parent hands down (baggage) on the span, so every span of
/// an order carries it, whichever crate started it.
#[derive(Debug)]
struct Correlated<P>(P);

impl<P: SpanProcessor> SpanProcessor for Correlated<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        if let Some(cid) = cx.baggage().get(CORRELATION_ID) {
            span.set_attribute(KeyValue::new(CORRELATION_ID, cid.clone()));
        }
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        // A span that declares the field itself has it twice now: keep the first.
        let mut seen = false;
        span.attributes.retain(|kv| {
            if kv.key.as_str() != CORRELATION_ID {
                return true;
            }
            !std::mem::replace(&mut seen, true)
        });
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Records the trace id on `span` (a field it declares), so log lines inside it carry it.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = contoso_telemetry::trace_id(span) {
        span.record("trace_id", id);
    }
}

/// Puts the current span's trace context on an outgoing gRPC request, replacing any the caller
/// sent (the current span is already its child).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (name, value) in contoso_telemetry::headers_of(&tracing::Span::current()) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
            value.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// The server span of the call being handled, in the request's extensions: a handler that learns
/// the order's correlation id records it there (`request.extensions().get::<ServerSpan>()`).
#[derive(Debug, Clone)]
pub struct ServerSpan(tracing::Span);

impl ServerSpan {
    /// Records the order's correlation id on the call's server span.
    pub fn record_correlation_id(&self, correlation_id: &str) {
        self.0.record(CORRELATION_ID, correlation_id);
    }
}

/// RED metrics of every gRPC method and HTTP route a [`crate::server::GrpcHost`] serves.
struct ServerMetrics {
    rpc_requests: Counters,
    rpc_duration: Histograms,
    http_requests: Counters,
    http_duration: Histograms,
}

static SERVER_METRICS: LazyLock<ServerMetrics> = LazyLock::new(|| ServerMetrics {
    rpc_requests: metrics::counters(
        "rpc_server_requests",
        "gRPC calls answered, by service, method and gRPC status code.",
    ),
    rpc_duration: metrics::seconds(
        "rpc_server_duration",
        "Time to answer a gRPC call (for a server stream: to open it), by service and method.",
        metrics::CALL_BUCKETS,
    ),
    http_requests: metrics::counters(
        "http_server_requests",
        "HTTP requests answered, by method, route and status.",
    ),
    http_duration: metrics::seconds(
        "http_server_request_duration",
        "Time to answer an HTTP request (to its response head), by method and route.",
        metrics::CALL_BUCKETS,
    ),
});

/// Registers the server metrics (their series appear with the first call of each method).
pub fn register_server_metrics() {
    LazyLock::force(&SERVER_METRICS);
}

/// The server span of every call (semantic conventions for RPC and HTTP servers), a child of the
/// caller's trace context, and the RED metrics of its method or route. Probes and `/metrics`
/// are neither traced nor counted.
pub async fn server_layer(mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if matches!(path.as_str(), "/metrics" | "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let parent = Parent::remote(|name| request.headers().get(name).and_then(|v| v.to_str().ok()));
    let correlation_id = parent.correlation_id();
    let started = Instant::now();
    if grpc {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", "unknown"));
        let (service, method) = (service.to_owned(), method.to_owned());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = field::Empty,
            trace_id = field::Empty,
            correlation_id = correlation_id,
        );
        parent.adopt(&span);
        record_trace_id(&span);
        request.extensions_mut().insert(ServerSpan(span.clone()));
        let response = next.run(request).instrument(span.clone()).await;
        // An error is a trailers-only answer, its status in the headers; a success sends its
        // status in the trailers, after this point.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        span.record("rpc.grpc.status_code", code);
        if code != 0 {
            span.record("otel.status_code", "ERROR");
        }
        // A method the service does not have would otherwise add a series per name tried.
        let method = if code == 12 {
            "unknown".to_owned()
        } else {
            method
        };
        let m = &*SERVER_METRICS;
        record_red(
            (&m.rpc_requests, &m.rpc_duration),
            vec![label("service", service), label("method", method)],
            label("code", code.to_string()),
            started,
        );
        response
    } else {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
        let method = request.method().as_str().to_owned();
        let span = tracing::info_span!(
            "http",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            url.path = %path,
            http.response.status_code = field::Empty,
            trace_id = field::Empty,
            correlation_id = correlation_id,
        );
        parent.adopt(&span);
        record_trace_id(&span);
        request.extensions_mut().insert(ServerSpan(span.clone()));
        let response = next.run(request).instrument(span.clone()).await;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        let m = &*SERVER_METRICS;
        record_red(
            (&m.http_requests, &m.http_duration),
            vec![label("method", method), label("route", route)],
            label("status", status.to_string()),
            started,
        );
        response
    }
}

/// Counts one answered request under `labels` and its `outcome` (status or code), and records its
/// duration under `labels` alone.
fn record_red(
    (requests, duration): (&Counters, &Histograms),
    labels: Labels,
    outcome: (&'static str, String),
    started: Instant,
) {
    let mut counted = labels.clone();
    counted.push(outcome);
    requests.get_or_create(&counted).inc();
    duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// `GET /metrics`: every metric of the process, in the OpenMetrics text format.
pub async fn metrics_handler() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        metrics::encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_plain_log_line_keeps_the_ids_and_leaves_the_span_attributes_to_the_trace() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            logfmt::layer()
                .with_target(false)
                .with_ansi(false)
                .fmt_fields(PlainFields)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc",
                otel.kind = "server",
                rpc.method = "PlaceOrder",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                correlation_id = field::Empty,
            );
            span.record("rpc.grpc.status_code", 0);
            span.record("correlation_id", "c-1");
            span.in_scope(|| tracing::info!(lines = 2, "order accepted"));
        });
        let line = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(
                "rpc{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\" correlation_id=\"c-1\"}: order accepted lines=2"
            ),
            "{line}"
        );
        assert!(
            !line.contains("otel.kind") && !line.contains("rpc.method"),
            "{line}"
        );
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_switched_off() {
        assert_eq!(export_protocol(vars(&[])).unwrap(), None);
        assert_eq!(
            export_protocol(vars(&[("OTEL_SERVICE_NAME", "accept-svc")])).unwrap(),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(
            export_protocol(vars(&[endpoint, ("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert_eq!(
            export_protocol(vars(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])).unwrap(),
            None
        );
    }

    #[test]
    fn grpc_is_the_default_protocol_and_http_protobuf_is_chosen_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(
            export_protocol(vars(&[endpoint])).unwrap(),
            Some(Protocol::Grpc)
        );
        assert_eq!(
            export_protocol(vars(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://collector:4318/v1/traces"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap(),
            Some(Protocol::HttpProtobuf)
        );
    }

    #[test]
    fn a_value_that_cannot_be_honoured_is_an_error_naming_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let cases: [&[(&str, &str)]; 5] = [
            &[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            &[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")],
            &[endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")],
            &[
                endpoint,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ],
            &[endpoint, ("OTEL_BSP_SCHEDULE_DELAY", "5s")],
        ];
        for case in cases {
            let error = export_protocol(vars(case)).unwrap_err().to_string();
            let named = case.last().unwrap().0;
            assert!(error.contains(named), "{error} should name {named}");
        }
    }
}
