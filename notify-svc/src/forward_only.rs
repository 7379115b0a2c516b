//! What one stream last sent per order, so a late or duplicate event never moves a status back on
//! the client. Bounded: past the capacity the least recently touched order is forgotten.

use std::collections::HashMap;

use contoso_domain::{CorrelationId, OrderStatus};

#[derive(Debug)]
struct Seen {
    status: OrderStatus,
    touched: u64,
}

#[derive(Debug)]
pub(crate) struct LastSent {
    capacity: usize,
    clock: u64,
    seen: HashMap<CorrelationId, Seen>,
}

impl LastSent {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            clock: 0,
            seen: HashMap::new(),
        }
    }

    /// True, and remembered, when `status` moves `cid` forward from what this stream sent (or
    /// the stream has not sent anything for it); false when it would not advance.
    pub(crate) fn advance(&mut self, cid: CorrelationId, status: OrderStatus) -> bool {
        self.clock += 1;
        if let Some(seen) = self.seen.get_mut(&cid) {
            seen.touched = self.clock;
            if !seen.status.can_advance_to(status) {
                return false;
            }
            seen.status = status;
            return true;
        }
        if self.seen.len() >= self.capacity {
            self.evict_oldest();
        }
        self.seen.insert(
            cid,
            Seen {
                status,
                touched: self.clock,
            },
        );
        true
    }

    /// A linear scan, but only when the map is full, and the map is small.
    fn evict_oldest(&mut self) {
        let oldest = self
            .seen
            .iter()
            .min_by_key(|(_, seen)| seen.touched)
            .map(|(cid, _)| *cid);
        if let Some(cid) = oldest {
            self.seen.remove(&cid);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn late_and_duplicate_statuses_are_refused() {
        let mut sent = LastSent::new(8);
        let cid = CorrelationId::new();
        assert!(sent.advance(cid, Accepted));
        assert!(!sent.advance(cid, Accepted));
        assert!(sent.advance(cid, Completed));
        assert!(!sent.advance(cid, Processing));
        assert!(!sent.advance(cid, Failed));
    }

    #[test]
    fn the_first_status_of_an_order_is_always_sent() {
        let mut sent = LastSent::new(8);
        assert!(sent.advance(CorrelationId::new(), Processing));
        assert!(sent.advance(CorrelationId::new(), Completed));
    }

    #[test]
    fn the_least_recently_touched_order_is_forgotten_past_capacity() {
        let mut sent = LastSent::new(2);
        let (a, b, c) = (
            CorrelationId::new(),
            CorrelationId::new(),
            CorrelationId::new(),
        );
        assert!(sent.advance(a, Accepted));
        assert!(sent.advance(b, Accepted));
        assert!(sent.advance(a, Processing));
        assert!(sent.advance(c, Accepted));
        assert_eq!(sent.len(), 2);
        // `b` was the oldest, so it was forgotten and counts as new again; `a` was kept.
        assert!(sent.advance(b, Accepted));
        assert!(!sent.advance(c, Accepted));
    }
}
