//! Live progress on stderr: a bar over the run's duration (or order count) with the counters, or,
//! when stderr is not a terminal (CI logs), one plain line every five seconds.

use std::{
    io::IsTerminal as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::load::{Sample, Shape};

const PLAIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// Counts what the bar's length counts: seconds or orders.
    by_orders: Mutex<bool>,
    last_plain: Mutex<Option<Instant>>,
    enabled: bool,
}

impl Progress {
    pub(crate) fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>22} [{bar:20}] {pos}/{len} {wide_msg}")
                    .expect("a valid progress template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            by_orders: Mutex::new(false),
            last_plain: Mutex::new(None),
            enabled,
        }
    }

    pub(crate) fn start_phase(&self, api: &str, shape: &Shape) {
        let by_orders = shape.duration.is_none();
        *self.by_orders.lock().unwrap_or_else(|e| e.into_inner()) = by_orders;
        let len = match (shape.duration, shape.orders) {
            (Some(d), _) => d.as_secs(),
            (None, Some(n)) => n,
            (None, None) => 0,
        };
        match &self.bar {
            Some(bar) => {
                bar.reset();
                bar.set_prefix(api.to_owned());
                bar.set_length(len);
            }
            None if self.enabled => eprintln!("bench: {api}, {}", shape.mode()),
            None => {}
        }
    }

    pub(crate) fn update(&self, s: &Sample) {
        let line = format!(
            "accepted {} ({:.0}/s) · completed {} ({:.0}/s) · in flight {} · errors {} · streams {}",
            s.accepted,
            s.accepted as f64 / s.t_secs.max(1e-3),
            s.completed,
            s.completed as f64 / s.t_secs.max(1e-3),
            s.in_flight,
            s.errors,
            s.streams_open
        );
        match &self.bar {
            Some(bar) => {
                let by_orders = *self.by_orders.lock().unwrap_or_else(|e| e.into_inner());
                let pos = if by_orders { s.sent } else { s.t_secs as u64 };
                bar.set_position(pos.min(bar.length().unwrap_or(pos)));
                bar.set_message(line);
            }
            None if self.enabled => {
                let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
                    *last = Some(Instant::now());
                    eprintln!("bench: {:>5.1}s {line}", s.t_secs);
                }
            }
            None => {}
        }
    }

    /// Placing is over; what is left is waiting for COMPLETED.
    pub(crate) fn draining(&self) {
        if let Some(bar) = &self.bar {
            bar.set_prefix("waiting for COMPLETED");
        }
    }

    pub(crate) fn finish_phase(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// A line that does not tear the bar.
    pub(crate) fn println(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.enabled => eprintln!("bench: {}", line.as_ref()),
            None => {}
        }
    }
}
