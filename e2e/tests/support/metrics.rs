//! Scraping `/metrics` (OpenMetrics text) and reading series out of it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::http;

/// One scrape: every sample line as `(series, value)`, the series being `name{labels}` as
/// printed.
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    samples: Vec<(String, f64)>,
    text: String,
}

impl Scrape {
    pub(crate) fn of(addr: SocketAddr) -> Self {
        let response = http::get(addr, "/metrics")
            .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        let samples = response
            .body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self {
            samples,
            text: response.body,
        }
    }

    /// The sum of the samples of metric `name` whose labels include every one of `labels`
    /// (`key="value"`); 0 when there is none.
    pub(crate) fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (metric, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
                metric == name && labels.iter().all(|label| rest.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Whether metric `name` has any sample at all.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.samples
            .iter()
            .any(|(series, _)| series == name || series.starts_with(&format!("{name}{{")))
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// Scrapes `addr` until `done` holds for the scrape, within `within`; returns that scrape.
pub(crate) fn wait_for(
    addr: SocketAddr,
    what: &str,
    within: Duration,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let until = Instant::now() + within;
    loop {
        let scrape = Scrape::of(addr);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < until,
            "not true of http://{addr}/metrics within {within:?}: {what}\n{}",
            scrape.text()
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
