//! The caller's order history, reading their own writes: an order is listed and readable as soon
//! as `PlaceOrder` has answered. Until process-svc records it in Postgres it lives in the
//! caller's in-flight set in the workflow state (the accepted order's snapshot, written with the
//! map and status at intake); `GetOrder` and `ListOrders` read both, Postgres winning, and drop
//! in-flight entries they find recorded. Decision 12 in `docs/decisions.md`.

use std::{cmp::Reverse, collections::HashSet};

use contoso_domain::{CorrelationId, OrderId, Report, UserId};
use contoso_proto::orders::v1 as pb;
use contoso_state::{InflightOrder, StateError};
use prost::Message;
use tracing::Instrument;

use super::{OrdersApi, mapping::record_pb};
use crate::error::{ApiError, Paging};

/// The most in-flight (accepted, not yet recorded) orders one listing merges in: the newest.
/// Older unrecorded ones beyond it are left out of the list (and its total) until recorded.
pub(crate) const MAX_LISTED_INFLIGHT: usize = 100;

/// Intake prunes a user's in-flight set in the background whenever it reaches a multiple of this
/// many entries, so a client that places orders and never lists them does not grow it for good.
const PRUNE_EVERY: usize = 100;

impl OrdersApi {
    /// One of `user`'s orders: the recorded one if it is recorded, else their in-flight one.
    pub(super) async fn order(&self, user: &UserId, raw_id: i64) -> Result<pb::Order, ApiError> {
        let id = parse_order_id(raw_id)?;
        match self.orders.get_order(id).await? {
            Some(order) if !order.deleted && order.customer == *user => Ok(record_pb(order)),
            // Another user's order answers exactly as a missing one: its existence is not told.
            Some(_) => Err(not_found(id)),
            None => match self.state.inflight_order(user, id).await? {
                Some(snapshot) => {
                    let order = decode_snapshot(user, id, &snapshot)?;
                    self.with_live_status(order).await
                }
                None => Err(not_found(id)),
            },
        }
    }

    /// A page of `user`'s orders, recorded and in flight, newest first, and their total.
    pub(super) async fn list(
        &self,
        user: &UserId,
        paging: Paging,
    ) -> Result<(Vec<pb::Order>, usize), ApiError> {
        let pending = self.unrecorded_inflight(user).await?;
        let (offset, limit) = recorded_window(paging.offset, paging.size, pending.len());
        let page = self
            .orders
            .list_orders(
                user,
                i64::try_from(offset).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX),
            )
            .await?;
        let recorded = page.items.into_iter().map(|r| Listed {
            order: record_pb(r),
            inflight: false,
        });
        let pending = pending.into_iter().map(|order| Listed {
            order,
            inflight: true,
        });
        let merged = merge_page(
            pending.collect(),
            recorded.collect(),
            usize::try_from(page.total).unwrap_or(0),
            paging.offset,
            paging.size,
            |l| sort_key(&l.order),
        );
        let mut orders = Vec::with_capacity(merged.items.len());
        for listed in merged.items {
            orders.push(if listed.inflight {
                self.with_live_status(listed.order).await?
            } else {
                listed.order
            });
        }
        Ok((orders, merged.total))
    }

    /// Soft-deletes one of `user`'s recorded orders. One still in flight cannot be deleted yet:
    /// process-svc would record it afterwards, undeleted.
    pub(super) async fn delete(&self, user: &UserId, raw_id: i64) -> Result<(), ApiError> {
        let id = parse_order_id(raw_id)?;
        let order = match self.orders.get_order(id).await? {
            Some(order) if !order.deleted && order.customer == *user => order,
            Some(_) => return Err(not_found(id)),
            None => {
                return match self.state.inflight_order(user, id).await? {
                    Some(_) => Err(ApiError::StillProcessing(id)),
                    None => Err(not_found(id)),
                };
            }
        };
        let span = tracing::info_span!("delete_order", correlation_id = %order.correlation_id, order_id = id.get());
        async {
            if !self.orders.soft_delete(user, id).await? {
                return Err(not_found(id));
            }
            tracing::info!("order soft-deleted");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// `user`'s in-flight orders that are not recorded yet, newest first, at most
    /// [`MAX_LISTED_INFLIGHT`]. Entries found recorded (or unreadable) are dropped from the set.
    async fn unrecorded_inflight(&self, user: &UserId) -> Result<Vec<pb::Order>, ApiError> {
        let entries = self.state.inflight_orders(user).await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<OrderId> = entries.iter().map(|e| e.order_id).collect();
        let recorded = self.orders.recorded_among(&ids).await?;
        let mut stale: Vec<OrderId> = recorded.iter().copied().collect();
        let mut pending = Vec::with_capacity(entries.len() - recorded.len().min(entries.len()));
        for InflightOrder { order_id, snapshot } in entries {
            if recorded.contains(&order_id) {
                continue;
            }
            match decode_snapshot(user, order_id, &snapshot) {
                Ok(order) => pending.push(order),
                Err(e) => {
                    tracing::error!(error = %e, "dropping an unreadable in-flight order; it is listed once recorded");
                    stale.push(order_id);
                }
            }
        }
        if !stale.is_empty()
            && let Err(e) = self.state.drop_inflight(user, &stale).await
        {
            tracing::warn!(error = %Report(&e), "dropping recorded in-flight orders failed; a later read retries");
        }
        pending.sort_by_key(|o| Reverse(sort_key(o)));
        pending.truncate(MAX_LISTED_INFLIGHT);
        Ok(pending)
    }

    /// The in-flight snapshot says ACCEPTED; the workflow status knows better once it moved on.
    async fn with_live_status(&self, mut order: pb::Order) -> Result<pb::Order, ApiError> {
        if let Ok(cid) = order.correlation_id.parse::<CorrelationId>()
            && let Some(record) = self.state.status(cid).await?
        {
            order.status = pb::OrderStatus::from(record.status) as i32;
        }
        Ok(order)
    }

    /// Once intake reports `held` in-flight entries for `user` at a multiple of [`PRUNE_EVERY`],
    /// drops the recorded ones without holding up the caller.
    pub(super) fn prune_inflight_in_background(&self, user: &UserId, held: usize) {
        if held < PRUNE_EVERY || !held.is_multiple_of(PRUNE_EVERY) {
            return;
        }
        let (api, user) = (self.clone(), user.clone());
        tokio::spawn(
            async move {
                if let Err(e) = api.unrecorded_inflight(&user).await {
                    tracing::warn!(error = %Report(&e), "pruning in-flight orders failed; a later read retries");
                }
            }
            .in_current_span(),
        );
    }
}

fn parse_order_id(raw: i64) -> Result<OrderId, ApiError> {
    OrderId::new(raw).ok_or_else(|| ApiError::invalid("order_id", "must be a positive order id"))
}

fn not_found(id: OrderId) -> ApiError {
    ApiError::NotFound(format!("order {id} not found"))
}

fn decode_snapshot(user: &UserId, id: OrderId, snapshot: &[u8]) -> Result<pb::Order, ApiError> {
    pb::Order::decode(snapshot).map_err(|e| {
        ApiError::State(StateError::Corrupt {
            key: format!("in-flight order {id} of {user}"),
            detail: e.to_string(),
        })
    })
}

/// An order on its way to a page, and whether it came from the in-flight set.
#[derive(Debug)]
struct Listed {
    order: pb::Order,
    inflight: bool,
}

/// Where an order sorts in a listing: acceptance time in microseconds (what Postgres keeps), then
/// order id; newest first means descending.
pub(crate) type SortKey = (i64, i64);

pub(crate) fn sort_key(order: &pb::Order) -> SortKey {
    let micros = order.created_at.as_ref().map_or(i64::MIN, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos) / 1_000)
    });
    (micros, order.order_id)
}

/// The recorded orders to fetch (offset, limit) so that, merged with `inflight` unrecorded ones,
/// they cover the page at `offset` of `size`: each in-flight order shifts the recorded ones by
/// at most one place, so starting `inflight` earlier and taking `inflight` more is enough.
pub(crate) fn recorded_window(offset: usize, size: usize, inflight: usize) -> (usize, usize) {
    (offset.saturating_sub(inflight), size + inflight)
}

/// One page of the union of recorded and in-flight orders, and the union's size.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MergedPage<T> {
    pub(crate) items: Vec<T>,
    pub(crate) total: usize,
}

/// Merges `inflight` (unrecorded orders, newest first) with `window`, the recorded orders at
/// [`recorded_window`]`(offset, size, inflight.len())` (newest first, of `recorded_total`), into
/// the page at `offset` of `size` of their union, ordered by `key` descending, exactly as if every
/// order had been sorted together.
///
/// Why merging the whole of `inflight` with the window is exact: with the window starting at
/// recorded position `w`, every recorded order before it precedes the window's first order, so
/// from that order on, the `j`-th merged order is the `(w + j)`-th of the union. In-flight orders
/// newer than the window's first land before it at wrong positions, but below `offset`
/// (`w = offset - inflight.len()` when `w > 0`, and exact when `w = 0`); in-flight orders older
/// than the window's last land past the page, the window being `size + inflight.len()` long.
///
/// An in-flight order also found in `window` (recorded between the two reads) is listed once, as
/// the recorded one.
pub(crate) fn merge_page<T>(
    inflight: Vec<T>,
    window: Vec<T>,
    recorded_total: usize,
    offset: usize,
    size: usize,
    key: impl Fn(&T) -> SortKey,
) -> MergedPage<T> {
    let (window_offset, _) = recorded_window(offset, size, inflight.len());
    let in_window: HashSet<i64> = window.iter().map(|t| key(t).1).collect();
    let inflight: Vec<T> = inflight
        .into_iter()
        .filter(|t| !in_window.contains(&key(t).1))
        .collect();
    let total = recorded_total + inflight.len();

    let mut merged = Vec::with_capacity(inflight.len() + window.len());
    let mut pending = inflight.into_iter().peekable();
    let mut recorded = window.into_iter().peekable();
    while let (Some(p), Some(r)) = (pending.peek(), recorded.peek()) {
        merged.extend(if key(p) > key(r) {
            pending.next()
        } else {
            recorded.next()
        });
    }
    merged.extend(pending);
    merged.extend(recorded);
    let items = merged
        .into_iter()
        .skip(offset - window_offset)
        .take(size)
        .collect();
    MergedPage { items, total }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (acceptance time, order id): the key itself.
    type Item = (i64, i64);

    fn key(item: &Item) -> SortKey {
        *item
    }

    fn newest_first(mut items: Vec<Item>) -> Vec<Item> {
        items.sort_by_key(|i| Reverse(*i));
        items
    }

    /// What a store would answer, then the merge: the page as `ListOrders` builds it.
    fn page(recorded: &[Item], inflight: &[Item], offset: usize, size: usize) -> MergedPage<Item> {
        let recorded = newest_first(recorded.to_vec());
        let inflight = newest_first(inflight.to_vec());
        let (from, limit) = recorded_window(offset, size, inflight.len());
        let window = recorded.iter().skip(from).take(limit).copied().collect();
        merge_page(inflight, window, recorded.len(), offset, size, key)
    }

    /// The page as if everything had been sorted together.
    fn expected(recorded: &[Item], inflight: &[Item], offset: usize, size: usize) -> Vec<Item> {
        let all = newest_first([recorded, inflight].concat());
        all.into_iter().skip(offset).take(size).collect()
    }

    /// Ten recorded orders accepted at 10, 20, ... 100 (ids 1..=10).
    fn recorded() -> Vec<Item> {
        (1..=10).map(|n| (n * 10, n)).collect()
    }

    #[test]
    fn the_window_starts_earlier_and_takes_more_by_the_number_in_flight() {
        assert_eq!(recorded_window(0, 20, 0), (0, 20));
        assert_eq!(recorded_window(0, 20, 3), (0, 23));
        assert_eq!(recorded_window(2, 5, 3), (0, 8));
        assert_eq!(recorded_window(40, 20, 3), (37, 23));
    }

    #[test]
    fn in_flight_orders_newer_than_all_recorded_ones_lead_the_first_page() {
        let inflight = [(200, 12), (150, 11)];
        let first = page(&recorded(), &inflight, 0, 3);
        assert_eq!(first.items, [(200, 12), (150, 11), (100, 10)]);
        assert_eq!(first.total, 12);
        // The next page continues with the recorded ones, none skipped.
        assert_eq!(
            page(&recorded(), &inflight, 3, 3).items,
            [(90, 9), (80, 8), (70, 7)]
        );
        // A page past the in-flight ones, fetched from an offset shifted by them.
        assert_eq!(
            page(&recorded(), &inflight, 10, 3).items,
            [(20, 2), (10, 1)]
        );
    }

    #[test]
    fn in_flight_orders_between_recorded_ones_take_their_place() {
        let inflight = [(55, 21), (45, 22)];
        // Page before them: only recorded ones.
        assert_eq!(
            page(&recorded(), &inflight, 0, 4).items,
            [(100, 10), (90, 9), (80, 8), (70, 7)]
        );
        // Page across them.
        assert_eq!(
            page(&recorded(), &inflight, 4, 4).items,
            [(60, 6), (55, 21), (50, 5), (45, 22)]
        );
        // Page after them.
        let after = page(&recorded(), &inflight, 8, 4);
        assert_eq!(after.items, [(40, 4), (30, 3), (20, 2), (10, 1)]);
        assert_eq!(after.total, 12);
        assert_eq!(page(&recorded(), &inflight, 12, 4).items, []);
    }

    #[test]
    fn in_flight_orders_older_than_all_recorded_ones_end_the_list() {
        let inflight = [(5, 31), (1, 32)];
        assert_eq!(
            page(&recorded(), &inflight, 0, 5).items,
            expected(&recorded(), &inflight, 0, 5)
        );
        assert_eq!(
            page(&recorded(), &inflight, 9, 5).items,
            [(10, 1), (5, 31), (1, 32)]
        );
        assert_eq!(page(&recorded(), &inflight, 11, 5).items, [(1, 32)]);
        assert_eq!(page(&recorded(), &inflight, 12, 5).items, []);
    }

    #[test]
    fn only_in_flight_orders_or_only_recorded_ones() {
        let inflight = [(3, 3), (2, 2), (1, 1)];
        let only = page(&[], &inflight, 1, 5);
        assert_eq!((only.items, only.total), (vec![(2, 2), (1, 1)], 3));
        let none = page(&recorded(), &[], 8, 5);
        assert_eq!((none.items, none.total), (vec![(20, 2), (10, 1)], 10));
        let empty = page(&[], &[], 0, 5);
        assert_eq!((empty.items, empty.total), (vec![], 0));
    }

    #[test]
    fn equal_acceptance_times_order_by_id_descending() {
        let recorded = [(10, 1), (10, 3)];
        let inflight = [(10, 2), (10, 4)];
        assert_eq!(
            page(&recorded, &inflight, 0, 10).items,
            [(10, 4), (10, 3), (10, 2), (10, 1)]
        );
        assert_eq!(page(&recorded, &inflight, 1, 2).items, [(10, 3), (10, 2)]);
    }

    #[test]
    fn an_order_recorded_between_the_two_reads_is_listed_once() {
        // (55, 21) was in flight when checked, then recorded before the page was read.
        let mut now_recorded = recorded();
        now_recorded.push((55, 21));
        let recorded_sorted = newest_first(now_recorded);
        let inflight = vec![(55, 21)];
        let (from, limit) = recorded_window(0, 20, inflight.len());
        let window = recorded_sorted
            .iter()
            .skip(from)
            .take(limit)
            .copied()
            .collect();
        let merged = merge_page(inflight, window, recorded_sorted.len(), 0, 20, key);
        assert_eq!(merged.items, recorded_sorted);
        assert_eq!(merged.total, 11);
    }

    /// Every offset and size over interleavings of recorded and in-flight orders: each page is
    /// exactly the slice of the fully sorted union.
    #[test]
    fn every_page_equals_the_slice_of_the_sorted_union() {
        let recorded: Vec<Item> = (1..=12).map(|n| (n * 10, n)).collect();
        let inflight_sets: [Vec<Item>; 6] = [
            vec![],
            vec![(125, 101)],
            vec![(200, 101), (190, 102), (180, 103)],
            vec![(65, 101), (64, 102), (35, 103), (5, 104)],
            vec![(1, 101), (2, 102)],
            (0..20).map(|n| (n * 7 + 3, 200 + n)).collect(),
        ];
        for inflight in &inflight_sets {
            let union = recorded.len() + inflight.len();
            for offset in 0..=union + 2 {
                for size in 1..=union + 1 {
                    let got = page(&recorded, inflight, offset, size);
                    assert_eq!(
                        got.items,
                        expected(&recorded, inflight, offset, size),
                        "offset {offset} size {size} inflight {inflight:?}"
                    );
                    assert_eq!(got.total, union);
                }
            }
        }
    }

    #[test]
    fn sort_keys_use_microseconds_then_the_order_id() {
        let order = |seconds, nanos, order_id| pb::Order {
            order_id,
            created_at: chrono::DateTime::from_timestamp(seconds, nanos)
                .map(contoso_proto::convert::to_timestamp),
            ..Default::default()
        };
        assert_eq!(sort_key(&order(2, 1_999, 7)), (2_000_001, 7));
        assert_eq!(sort_key(&order(2, 1_000, 7)), sort_key(&order(2, 1_999, 7)));
        assert!(sort_key(&order(2, 0, 8)) > sort_key(&order(2, 0, 7)));
        assert_eq!(sort_key(&pb::Order::default()).0, i64::MIN);
    }
}
