//! One order, one trace. A span's context leaves a process as W3C headers (`traceparent`,
//! `tracestate`) and the order's correlation id as W3C `baggage`; the next process makes its first
//! span a child of that remote parent ([`Parent::remote`]). Carriers differ (gRPC metadata, broker
//! headers, an outbox column), so both directions work on plain `(name, value)` text.
//!
//! The correlation id travels as baggage so that every span started under it, in this process or
//! the next, can carry it as an attribute (`contoso_platform::telemetry` stamps it on each span).
//!
//! Everything here is a no-op when no OpenTelemetry layer is installed: spans then have no context,
//! nothing is injected, and an extracted parent is ignored.

use std::{marker::PhantomData, sync::LazyLock};

use opentelemetry::{
    Context, KeyValue,
    baggage::BaggageExt,
    propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span field, attribute and baggage key of an order's correlation id.
pub const CORRELATION_ID: &str = "correlation_id";

/// W3C trace context and W3C baggage, in that order.
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// The headers that carry `span`'s context to another process, as `(name, value)` pairs with
/// lower-case names. Empty when tracing is off.
pub fn headers_of(span: &Span) -> Vec<(String, String)> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut headers = Headers(Vec::with_capacity(3));
    PROPAGATOR.inject_context(&cx, &mut headers);
    headers.0
}

/// The trace id of `span` (32 hex digits), when it is traced.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Hands the order's correlation id down to every span started under `span` (which records it
/// as a field of its own, for the logs). Call before `span` is first entered.
pub fn correlate(span: &Span, correlation_id: &str) {
    Parent::current()
        .with_correlation_id(correlation_id)
        .adopt(span);
}

/// Links `span` to `to`: for work done for several traces at once (a batch of orders recorded
/// in one transaction), which can be the child of only one of them.
pub fn link(span: &Span, to: &Span) {
    span.add_link(to.context().span().span_context().clone());
}

/// The parent a new span is to have.
#[derive(Debug, Clone)]
pub struct Parent(Context);

impl Parent {
    /// The span being executed.
    pub fn current() -> Self {
        Self(Context::current())
    }

    /// The remote parent named by a carrier's headers, looked up by their lower-case name
    /// (`traceparent`, `tracestate`, `baggage`). None there: the new span starts a trace.
    pub fn remote<'a>(lookup: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self(PROPAGATOR.extract_with_context(&Context::new(), &Lookup(lookup, PhantomData)))
    }

    /// A remote parent from its `(name, value)` headers, as [`headers_of`] made them.
    pub fn from_headers(headers: &[(String, String)]) -> Self {
        Self::remote(|name| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        })
    }

    /// Whether there is a parent span (local or remote) at all.
    pub fn is_valid(&self) -> bool {
        self.0.span().span_context().is_valid()
    }

    /// The same parent, with the order's correlation id handed down to its descendants.
    pub fn with_correlation_id(self, correlation_id: &str) -> Self {
        let mut entries: Vec<KeyValue> = self
            .0
            .baggage()
            .iter()
            .filter(|(key, _)| key.as_str() != CORRELATION_ID)
            .map(|(key, (value, _))| KeyValue::new(key.clone(), value.clone()))
            .collect();
        entries.push(KeyValue::new(CORRELATION_ID, correlation_id.to_owned()));
        Self(self.0.with_baggage(entries))
    }

    /// The correlation id this parent hands down, if any.
    pub fn correlation_id(&self) -> Option<String> {
        self.0
            .baggage()
            .get(CORRELATION_ID)
            .map(|value| value.as_str().to_owned())
    }

    /// Makes this the parent of `span`, which must not have been entered yet. Ignored when
    /// tracing is off (the span then has no OpenTelemetry side).
    pub fn adopt(self, span: &Span) {
        // Errors mean no OpenTelemetry layer or a filtered-out span: nothing to parent then.
        let _ = span.set_parent(self.0);
    }
}

struct Headers(Vec<(String, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_ascii_lowercase(), value));
    }
}

struct Lookup<'a, F>(F, PhantomData<&'a ()>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_remote_parent_is_read_from_traceparent_and_baggage() {
        let headers = vec![
            ("traceparent".to_owned(), TRACEPARENT.to_owned()),
            ("baggage".to_owned(), "correlation_id=abc".to_owned()),
        ];
        let parent = Parent::from_headers(&headers);
        assert!(parent.is_valid());
        assert_eq!(
            parent.0.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(parent.correlation_id().as_deref(), Some("abc"));
    }

    #[test]
    fn no_headers_means_no_parent_and_a_malformed_traceparent_is_ignored() {
        assert!(!Parent::from_headers(&[]).is_valid());
        let bad = vec![("traceparent".to_owned(), "00-zz-yy-01".to_owned())];
        assert!(!Parent::from_headers(&bad).is_valid());
    }

    #[test]
    fn a_correlation_id_replaces_an_earlier_one() {
        let parent =
            Parent::from_headers(&[("baggage".to_owned(), "correlation_id=old".to_owned())])
                .with_correlation_id("new");
        assert_eq!(parent.correlation_id().as_deref(), Some("new"));
    }

    #[test]
    fn a_span_without_an_opentelemetry_layer_has_no_headers_and_no_trace_id() {
        let span = tracing::info_span!("untraced");
        assert!(headers_of(&span).is_empty());
        assert_eq!(trace_id(&span), None);
    }
}
