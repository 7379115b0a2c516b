//! What every crate records telemetry through, whatever it talks to: the W3C trace context that
//! carries one order's trace across process hops ([`context`]), and the process's Prometheus
//! registry ([`metrics`]). Installing the subscriber, the OTLP exporter and serving `/metrics` is
//! `contoso_platform::telemetry`'s job; this crate compiles no network client, so the store and the
//! seams can use it.

pub mod context;
pub mod metrics;

pub use context::{CORRELATION_ID, Parent, correlate, headers_of, link, trace_id};
