//! `GET /api/orders/events`: the REST twin of `WatchOrderStatus`, as Server-Sent Events. First the
//! current status of the orders named by `?correlationId=` (repeatable), then every status change
//! of the caller's orders as it happens. Each event's `id` is `<correlationId>/<Status>`; a client
//! that reconnects with `Last-Event-ID` gets that order's current status in its snapshot, so an
//! update missed while it was away is not lost. Comments keep idle connections open through
//! proxies.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{RawQuery, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use chrono::{DateTime, Utc};
use contoso_proto::{
    convert::from_timestamp,
    notify::v1::{
        OrderStatusUpdate, WatchOrderStatusRequest, WatchOrderStatusResponse,
        watch_order_status_response::Event as Item,
    },
};
use futures::{Stream, stream};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use utoipa::ToSchema;

use super::{Caller, Rest, orders::OrderStatus, upstream_problem};
use crate::problem::Problem;

const UPSTREAM: &str = "notify-svc";
/// Comment lines sent when nothing else was, so proxies do not close an idle stream.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One status change, the `data` of an `event: status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusEvent {
    correlation_id: String,
    status: OrderStatus,
    /// The order id, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<i64>,
    occurred_at: Option<DateTime<Utc>>,
    /// Why the order failed, for `Failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The correlation ids of `?correlationId=a&correlationId=b`, plus the one of a `Last-Event-ID`.
fn snapshot_ids(raw_query: Option<&str>, headers: &HeaderMap) -> Vec<String> {
    let mut ids: Vec<String> = raw_query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(name, _)| name == "correlationId")
                .map(|(_, value)| value.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('/'))
        .map(|(cid, _)| cid.to_owned());
    if let Some(cid) = last
        && !ids.contains(&cid)
    {
        ids.push(cid);
    }
    ids
}

/// The caller's order status changes as Server-Sent Events.
///
/// Each `event: status` carries a JSON `StatusEvent` and an `id` of `<correlationId>/<Status>`.
/// The stream ends when the gateway shuts down or notify-svc goes away; reconnect (EventSource
/// does so by itself) and the snapshot brings the named orders up to date.
#[utoipa::path(
    get, path = "/api/orders/events", tag = "orders",
    params(
        ("correlationId" = Option<Vec<uuid::Uuid>>, Query, explode = true, description = "Orders whose current status is sent first (repeatable)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received; its order is added to the snapshot"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A correlation id is not a UUID, or too many are named", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many open streams for this user", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Live status is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn stream(
    State(rest): State<Rest>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    caller.user()?;
    let request = caller.request(WatchOrderStatusRequest {
        correlation_ids: snapshot_ids(raw_query.as_deref(), &headers),
    });
    let upstream = rest
        .status
        .clone()
        .watch_order_status(request)
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner();
    let events = stream::unfold(Some((upstream, rest.shutdown.clone())), next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(rest.heartbeat)))
}

type Relay = Option<(Streaming<WatchOrderStatusResponse>, CancellationToken)>;

/// The next SSE event: a status change, a comment for a heartbeat, or, once the upstream stream
/// failed or the gateway is shutting down, an `event: error` and the end.
async fn next_event(state: Relay) -> Option<(Result<Event, Infallible>, Relay)> {
    let (mut upstream, shutdown) = state?;
    let event = tokio::select! {
        biased;
        () = shutdown.cancelled() => return Some((Ok(closing("the gateway is shutting down; reconnect")), None)),
        item = upstream.message() => item,
    };
    match event {
        Ok(Some(WatchOrderStatusResponse {
            event: Some(Item::Update(update)),
        })) => {
            let event = status_event(update);
            Some((Ok(event), Some((upstream, shutdown))))
        }
        Ok(Some(_)) => Some((
            Ok(Event::default().comment("heartbeat")),
            Some((upstream, shutdown)),
        )),
        Ok(None) => None,
        Err(status) => {
            tracing::debug!(code = ?status.code(), "event stream failed upstream");
            Some((Ok(closing("live status was interrupted; reconnect")), None))
        }
    }
}

fn closing(message: &str) -> Event {
    Event::default().event("error").data(message)
}

fn status_event(update: OrderStatusUpdate) -> Event {
    let Some(status) = OrderStatus::from_pb(update.status) else {
        return Event::default().comment("update without a status");
    };
    let id = format!("{}/{}", update.correlation_id, status.name());
    let body = StatusEvent {
        correlation_id: update.correlation_id,
        status,
        order_id: (update.order_id > 0).then_some(update.order_id),
        occurred_at: update.occurred_at.as_ref().and_then(from_timestamp),
        reason: (!update.reason.is_empty()).then_some(update.reason),
    };
    match Event::default().event("status").id(id).json_data(&body) {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(error = %e, "encoding a status event failed");
            Event::default().comment("unencodable update")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_come_from_the_query_and_the_last_event_id() {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", "c3/Processing".parse().unwrap());
        let ids = snapshot_ids(Some("correlationId=c1&size=3&correlationId=c2"), &headers);
        assert_eq!(ids, ["c1", "c2", "c3"]);
        headers.insert("last-event-id", "c1/Completed".parse().unwrap());
        assert_eq!(snapshot_ids(Some("correlationId=c1"), &headers), ["c1"]);
        assert!(snapshot_ids(None, &HeaderMap::new()).is_empty());
    }
}
