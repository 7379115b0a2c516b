//! An OTLP trace receiver in the test process: the OTLP `TraceService` over gRPC and `POST
//! /v1/traces` (http/protobuf) on one free port, as a collector would offer them. It keeps every
//! span it is sent, flattened with its service's name, so a test can look at one order's trace.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::span::SpanKind,
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedSpan {
    /// The `service.name` of the resource that sent it.
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) kind: SpanKind,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: String,
    /// Attributes with their values as text.
    pub(crate) attributes: HashMap<String, String>,
}

impl ReceivedSpan {
    pub(crate) fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Condvar,
}

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("the span list");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attributes(&r.attributes).remove("service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.arrived.notify_all();
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The receiver; stops when dropped.
#[derive(Debug)]
pub(crate) struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    _runtime: tokio::runtime::Runtime,
}

impl OtlpReceiver {
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the OTLP receiver");
        let received = Arc::new(Received::default());
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("binding the OTLP receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let http = {
            let received = received.clone();
            axum::Router::new().route(
                "/v1/traces",
                post(move |body: Bytes| async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            received.add(request);
                            (
                                StatusCode::OK,
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                        }
                        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                    }
                }),
            )
        };
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(TraceServiceServer::new(Service(received.clone())));
        let router = routes.routes().into_axum_router().merge(http);
        runtime.spawn(
            tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(tonic::service::Routes::from(router))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            received,
            _runtime: runtime,
        }
    }

    /// The base endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT` (either protocol).
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment that makes a service export its spans here, within a fraction of a
    /// second of ending them.
    pub(crate) fn env(&self, protocol: &str) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    }

    /// Waits until the spans received so far satisfy `done`, and returns them; panics with
    /// what arrived when `within` passes first.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = Instant::now() + within;
        let mut spans = self.received.spans.lock().expect("the span list");
        loop {
            if done(&spans) {
                return spans.clone();
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "not received within {within:?}: {what}\nreceived: {:#?}",
                spans
                    .iter()
                    .map(|s| format!(
                        "{} {:?} {} {:?}",
                        s.service,
                        s.kind,
                        s.name,
                        s.attribute("correlation_id")
                    ))
                    .collect::<Vec<_>>()
            );
            spans = self
                .received
                .arrived
                .wait_timeout(spans, left)
                .expect("the span list")
                .0;
        }
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
