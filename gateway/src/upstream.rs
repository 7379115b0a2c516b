//! The gRPC channels to the internal services: one lazily connected, multiplexed HTTP/2 channel per
//! upstream, shared by every call (cloning a `Channel` is a handle copy, not a new connection).

use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Channel, Endpoint};

/// A dead upstream should fail calls quickly with UNAVAILABLE rather than hold them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Status streams stay open for hours; keepalives stop idle connections from being dropped
/// silently by NATs and load balancers, and detect a peer that vanished without a FIN.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The channels to accept-svc (catalog, orders) and notify-svc (status streams).
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    accept: Channel,
    notify: Channel,
}

impl Upstreams {
    /// Configures both channels without connecting: the gateway starts even when an upstream is
    /// down, and each channel (re)connects on demand.
    pub(crate) fn lazy(accept_url: &str, notify_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            accept: channel(accept_url).context("ACCEPT_GRPC_URL")?,
            notify: channel(notify_url).context("NOTIFY_GRPC_URL")?,
        })
    }

    pub(crate) fn accept(&self) -> Channel {
        self.accept.clone()
    }

    pub(crate) fn notify(&self) -> Channel {
        self.notify.clone()
    }
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid upstream URL {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstreams_are_configured_without_a_running_server() {
        // Nothing listens on port 1; a lazy channel must not care until a call is made.
        assert!(Upstreams::lazy("http://127.0.0.1:1", "http://127.0.0.1:1").is_ok());
    }

    #[tokio::test]
    async fn a_malformed_upstream_url_names_the_setting() {
        let err = Upstreams::lazy("http://127.0.0.1:1", "not a url").unwrap_err();
        assert!(format!("{err:#}").contains("NOTIFY_GRPC_URL"), "{err:#}");
    }
}
