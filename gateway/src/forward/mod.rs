//! Forwarding gRPC calls to the internal services.
//!
//! A token the caller presents is verified here (signature, expiry, issuer, audience), so a forged
//! or expired one is refused at the front door. Whether a call needs a token at all is the
//! upstreams' decision (the catalog is public, orders are not): a call without one is forwarded
//! and the upstream answers UNAUTHENTICATED if it must. The gateway carries the caller's
//! credentials and tracing headers across and relays the upstream's answer unchanged.

use std::future::Future;

use bytes::Bytes;
use contoso_platform::{grpc_status, telemetry};
use tonic::{Code, Request, Response, Status, metadata::MetadataValue};

mod catalog;
mod entitlements;
mod orders;
mod status;

pub(crate) use catalog::CatalogForwarder;
pub(crate) use entitlements::EntitlementForwarder;
pub(crate) use orders::OrderForwarder;
pub(crate) use status::StatusForwarder;

/// The request id and the W3C trace context, carried upstream by gRPC forwarding and the REST API
/// alike so a call can be followed across the hop.
pub(crate) const TRACING_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// Request metadata copied upstream besides [`TRACING_HEADERS`]. An allow-list, so a client cannot
/// smuggle headers that internal services might trust. `grpc-timeout` carries the caller's deadline
/// to the upstream.
const FORWARDED_METADATA: [&str; 2] = ["authorization", "grpc-timeout"];

const REQUEST_ID: &str = "x-request-id";

/// The upstream request for `incoming`: the same message with the forwarded metadata, plus a fresh
/// `x-request-id` when the caller sent none so the hop can be followed in the logs. The id is
/// recorded on the current span's `request_id` field.
pub(crate) fn outgoing<T>(incoming: Request<T>) -> Request<T> {
    let (metadata, _, message) = incoming.into_parts();
    let mut request = Request::new(message);
    let out = request.metadata_mut();
    for key in FORWARDED_METADATA.into_iter().chain(TRACING_HEADERS) {
        if let Some(value) = metadata.get(key) {
            out.insert(key, value.clone());
        }
    }
    if !out.contains_key(REQUEST_ID)
        && let Ok(value) = MetadataValue::try_from(uuid::Uuid::new_v4().to_string())
    {
        out.insert(REQUEST_ID, value);
    }
    if let Some(id) = out.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        tracing::Span::current().record("request_id", id);
    }
    // When the gateway traces, the upstream call is a child of its span, not of the caller's.
    telemetry::inject_metadata(out);
    request
}

/// What the caller sees for a failed upstream call. A status the upstream sent is relayed as is
/// (code, message, details) but without its transport headers. A status the channel produced itself
/// (refused connection, reset, keepalive timeout) carries the local error as its source and text
/// that may name internal addresses, so it becomes a generic one with the same meaning.
pub(crate) fn relay(status: Status, upstream: &'static str) -> Status {
    if std::error::Error::source(&status).is_none() {
        return Status::with_details(
            status.code(),
            status.message(),
            Bytes::copy_from_slice(status.details()),
        );
    }
    match status.code() {
        Code::Cancelled => Status::cancelled(format!("the call to {upstream} was cancelled")),
        Code::DeadlineExceeded => {
            Status::deadline_exceeded(format!("{upstream} did not answer in time"))
        }
        _ => grpc_status::unavailable(upstream, &status),
    }
}

/// Forwards one unary call: rebuilds the request for the upstream, awaits `call`, and relays the
/// answer without the upstream's response headers.
pub(crate) async fn unary<Req, Resp, F, Fut>(
    upstream: &'static str,
    request: Request<Req>,
    call: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    match call(outgoing(request)).await {
        Ok(response) => Ok(Response::new(response.into_inner())),
        Err(status) => {
            tracing::debug!(code = ?status.code(), "upstream call failed");
            Err(relay(status, upstream))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn request_id<T>(request: &Request<T>) -> &str {
        request
            .metadata()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn allowed_metadata_is_copied_and_everything_else_is_dropped() {
        let mut incoming = Request::new(());
        let md = incoming.metadata_mut();
        md.insert("authorization", "Bearer abc".parse().unwrap());
        md.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        md.insert("x-internal-user", "root".parse().unwrap());

        let out = outgoing(incoming);

        assert_eq!(out.metadata().get("authorization").unwrap(), "Bearer abc");
        assert!(out.metadata().get("traceparent").is_some());
        assert!(out.metadata().get("x-internal-user").is_none());
    }

    #[test]
    fn a_request_id_is_kept_when_present_and_made_up_when_absent() {
        let mut incoming = Request::new(());
        incoming
            .metadata_mut()
            .insert("x-request-id", "req-1".parse().unwrap());
        assert_eq!(request_id(&outgoing(incoming)), "req-1");

        let made_up = outgoing(Request::new(()));
        assert!(uuid::Uuid::parse_str(request_id(&made_up)).is_ok());
    }

    #[test]
    fn an_upstream_status_keeps_its_code_message_and_details() {
        let sent = Status::with_details(
            Code::PermissionDenied,
            "not yours",
            Bytes::from_static(b"\x01\x02"),
        );
        let relayed = relay(sent, "accept-svc");
        assert_eq!(relayed.code(), Code::PermissionDenied);
        assert_eq!(relayed.message(), "not yours");
        assert_eq!(relayed.details(), b"\x01\x02");
    }

    #[test]
    fn a_local_transport_failure_becomes_unavailable_without_its_text() {
        let mut local = Status::unavailable("tcp connect error: 10.1.2.3:50051 connection refused");
        local.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let relayed = relay(local, "accept-svc");
        assert_eq!(relayed.code(), Code::Unavailable);
        assert!(
            !relayed.message().contains("10.1.2.3"),
            "{}",
            relayed.message()
        );
    }
}
