//! Entitlements: what a recorded order gives its buyer. Each order line grants one entitlement to
//! its product, with as many seats as the line's quantity, for one billing period; buying a
//! product again while holding it renews it ([`grant`], decision 16 in `docs/decisions.md`). The
//! buyer hands seats to other learners ([`Entitlement::check_assign`],
//! [`Entitlement::check_revoke`]) and keeps one seat for themselves until they give away the last
//! one ([`Entitlement::seats_used`]).
//!
//! Everything here is pure: the stores call these rules under their own lock, so both apply the
//! same ones.

use std::{cmp::Reverse, fmt};

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ids::{MAX_USER_ID_LEN, OrderId, UserId},
    order::Quantity,
    product::BillingPeriod,
};

/// The id of one entitlement: a positive bigint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntitlementId(i64);

impl EntitlementId {
    /// Entitlement ids are positive; anything else is not one.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for EntitlementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The instant a period would end is past what a timestamp can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a billing period starting at {0} ends past the representable time range")]
pub struct PeriodOutOfRange(pub DateTime<Utc>);

impl BillingPeriod {
    /// Months in one period: 1 (Monthly) or 12 (Annual).
    pub fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Annual => 12,
        }
    }

    /// The end of one period starting at `start`: the same time of day one calendar month
    /// (Monthly) or twelve (Annual) later, on the UTC calendar. A day the target month lacks is
    /// clamped to its last day: Jan 31 + 1 month is Feb 28 (Feb 29 in a leap year), Feb 29 + 1
    /// year is Feb 28.
    pub fn end_of_period_from(
        self,
        start: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PeriodOutOfRange> {
        start
            .checked_add_months(Months::new(self.months()))
            .ok_or(PeriodOutOfRange(start))
    }
}

/// When an entitlement may be used: from `from` (inclusive) until `until` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Validity {
    /// True while `now` is within the period.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.from <= now && now < self.until
    }

    /// True once the period has ended.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.until
    }

    /// Whole days until the end, counting a started day as one (so an active entitlement has at
    /// least 1 day left, and one that ends in exactly 31 days has 31); 0 once expired.
    pub fn days_left(&self, now: DateTime<Utc>) -> i64 {
        const DAY_MS: i64 = 86_400_000;
        let left = (self.until - now).num_milliseconds();
        if left <= 0 {
            0
        } else {
            (left + DAY_MS - 1) / DAY_MS
        }
    }
}

/// An entitlement the buyer already holds to a product, as [`grant`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub id: EntitlementId,
    pub valid_until: DateTime<Utc>,
}

/// What one new purchase line gets: its validity, and the entitlement it renews (whose seat
/// assignments carry over), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub validity: Validity,
    /// The buyer's current entitlement to the product that ends last, when one is still active.
    pub renews: Option<EntitlementId>,
}

/// The renewal rule (decision 16): a line recorded at `now` for a product billed by `period` is
/// valid from `now`, so its seats can be used at once, until one period after the later of `now`
/// and the end of the buyer's current entitlement to that product. So:
///
/// - holding nothing, or only expired entitlements (`held` ending at or before `now`): one period
///   from now;
/// - holding an active one: the paid period starts when the current one ends (no paid time is
///   lost by renewing early), and for the overlap, from now until then, the new seats come on top
///   of the current ones;
/// - a chain of renewals extends from the last end, whatever period each link was bought for
///   (mixed billing periods: a product's period may change between purchases).
///
/// `held` are the buyer's entitlements to the product, expired or not, in any order.
pub fn grant(
    now: DateTime<Utc>,
    period: BillingPeriod,
    held: &[Held],
) -> Result<Grant, PeriodOutOfRange> {
    let current = held
        .iter()
        .filter(|h| h.valid_until > now)
        .max_by_key(|h| (h.valid_until, h.id));
    let base = current.map_or(now, |h| h.valid_until);
    Ok(Grant {
        validity: Validity {
            from: now,
            until: period.end_of_period_from(base)?,
        },
        renews: current.map(|h| h.id),
    })
}

/// One seat of an entitlement given to a user other than its buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatAssignment {
    pub assignee: UserId,
    pub assigned_at: DateTime<Utc>,
}

/// An entitlement as the system of record holds it, with its seat assignments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    pub id: EntitlementId,
    /// Who bought it: the only one who manages its seats.
    pub buyer: UserId,
    /// The product's exam code.
    pub product_id: String,
    /// The product's name as the order line recorded it.
    pub product_name: String,
    /// How many people may use it at once: the order line's quantity.
    pub seats: Quantity,
    pub validity: Validity,
    /// The order line that granted it.
    pub order_id: OrderId,
    /// 1-based, as the order's lines are stored.
    pub line_no: i32,
    /// Seats given to others, oldest first.
    pub assignments: Vec<SeatAssignment>,
}

/// Why a seat cannot be assigned or revoked. Nothing changes when one is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatRefusal {
    /// No such entitlement, or one the caller neither bought nor holds a seat of: the same
    /// answer, so ids cannot be probed (decision 11).
    #[error("no such entitlement")]
    NotFound,
    /// The caller holds a seat but did not buy it: only the buyer manages seats.
    #[error("only the buyer of an entitlement assigns and revokes its seats")]
    NotBuyer,
    /// The buyer named themselves as an assignee: they hold a seat without an assignment.
    #[error("the buyer holds a seat of their own and cannot be assigned one")]
    OwnSeat,
    #[error("this user already holds a seat of this entitlement")]
    AlreadyAssigned,
    /// Revoking from a user holding no assigned seat (the buyer's own seat is not one).
    #[error("this user holds no assigned seat of this entitlement")]
    NotAssigned,
    #[error("the entitlement has expired")]
    Expired,
    #[error("no seat is free: all {seats} seats are assigned")]
    NoSeatFree { seats: i32 },
}

impl Entitlement {
    /// Seats in use: every assignment, plus the buyer's own seat unless every seat is assigned to
    /// others. `min(assignments + 1, seats)`.
    pub fn seats_used(&self) -> i32 {
        let assigned = i32::try_from(self.assignments.len()).unwrap_or(i32::MAX);
        assigned.saturating_add(1).min(self.seats.get())
    }

    /// Seats that can still be assigned without taking the buyer's own: `seats - seats_used`.
    pub fn free_seats(&self) -> i32 {
        self.seats.get() - self.seats_used()
    }

    /// The buyer keeps a seat until they have assigned every one of them.
    pub fn buyer_holds_seat(&self) -> bool {
        self.assignments.len() < self.seats_len()
    }

    pub fn is_buyer(&self, user: &UserId) -> bool {
        self.buyer == *user
    }

    pub fn is_assigned(&self, user: &UserId) -> bool {
        self.assignments.iter().any(|a| a.assignee == *user)
    }

    /// Whether `user` may use the product through this entitlement (its validity aside).
    pub fn holds_seat(&self, user: &UserId) -> bool {
        if self.is_buyer(user) {
            self.buyer_holds_seat()
        } else {
            self.is_assigned(user)
        }
    }

    /// The buyer and the assignees see an entitlement; nobody else does.
    pub fn is_visible_to(&self, user: &UserId) -> bool {
        self.is_buyer(user) || self.is_assigned(user)
    }

    fn seats_len(&self) -> usize {
        usize::try_from(self.seats.get()).unwrap_or(0)
    }

    /// Whether `caller` may give a seat to `assignee` at `now`: only the buyer, only to someone
    /// other than themselves who holds none yet, only while the entitlement lasts, and only while
    /// fewer seats are assigned than it has (the last one takes the buyer's own seat).
    pub fn check_assign(
        &self,
        caller: &UserId,
        assignee: &UserId,
        now: DateTime<Utc>,
    ) -> Result<(), SeatRefusal> {
        self.check_manager(caller)?;
        if self.is_buyer(assignee) {
            return Err(SeatRefusal::OwnSeat);
        }
        if self.is_assigned(assignee) {
            return Err(SeatRefusal::AlreadyAssigned);
        }
        if self.validity.is_expired(now) {
            return Err(SeatRefusal::Expired);
        }
        if self.assignments.len() >= self.seats_len() {
            return Err(SeatRefusal::NoSeatFree {
                seats: self.seats.get(),
            });
        }
        Ok(())
    }

    /// Whether `caller` may take back the seat `assignee` holds: only the buyer, only an assigned
    /// seat (the buyer's own is none). An expired entitlement's seats may still be revoked.
    pub fn check_revoke(&self, caller: &UserId, assignee: &UserId) -> Result<(), SeatRefusal> {
        self.check_manager(caller)?;
        if !self.is_assigned(assignee) {
            return Err(SeatRefusal::NotAssigned);
        }
        Ok(())
    }

    fn check_manager(&self, caller: &UserId) -> Result<(), SeatRefusal> {
        if self.is_buyer(caller) {
            Ok(())
        } else if self.is_assigned(caller) {
            Err(SeatRefusal::NotBuyer)
        } else {
            Err(SeatRefusal::NotFound)
        }
    }
}

/// Puts a listing in the order a learner reads it: active entitlements first (the one ending
/// soonest first), then any not started yet (soonest first), then expired ones (most recently
/// ended first); ties by id.
pub fn sort_for_listing(entitlements: &mut [Entitlement], now: DateTime<Utc>) {
    entitlements.sort_by_key(|e| {
        let v = e.validity;
        let (rank, first, second) = if v.is_active(now) {
            (0, v.until, Reverse(DateTime::<Utc>::MIN_UTC))
        } else if v.from > now {
            (1, v.from, Reverse(DateTime::<Utc>::MIN_UTC))
        } else {
            (2, DateTime::<Utc>::MIN_UTC, Reverse(v.until))
        };
        (rank, first, second, e.id)
    });
}

/// A user id a seat is assigned to or revoked from that is not 1 to [`MAX_USER_ID_LEN`]
/// characters of printable ASCII with no space at either end. Token subjects (opaque ids, GUIDs,
/// `auth0|…`, e-mail addresses) fit that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssigneeError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_USER_ID_LEN} characters")]
    TooLong,
    #[error("must be printable ASCII with no space at either end")]
    Malformed,
}

/// Parses the user a seat is assigned to or revoked from (see [`AssigneeError`]).
pub fn parse_assignee(raw: &str) -> Result<UserId, AssigneeError> {
    if raw.trim().is_empty() {
        return Err(AssigneeError::Empty);
    }
    if !raw.bytes().all(|b| (b' '..=b'~').contains(&b)) || raw.trim() != raw {
        return Err(AssigneeError::Malformed);
    }
    if raw.len() > MAX_USER_ID_LEN {
        return Err(AssigneeError::TooLong);
    }
    UserId::parse(raw).map_err(|_| AssigneeError::Malformed)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn id(n: i64) -> EntitlementId {
        EntitlementId::new(n).unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn held(n: i64, until: DateTime<Utc>) -> Held {
        Held {
            id: id(n),
            valid_until: until,
        }
    }

    fn entitlement(seats: i32, assignees: &[&str], until: DateTime<Utc>) -> Entitlement {
        Entitlement {
            id: id(1),
            buyer: user("buyer"),
            product_id: "AZ-104".into(),
            product_name: "Azure Administrator".into(),
            seats: Quantity::try_from(seats).unwrap(),
            validity: Validity {
                from: at(2027, 1, 1, 0),
                until,
            },
            order_id: OrderId::new(7).unwrap(),
            line_no: 1,
            assignments: assignees
                .iter()
                .map(|a| SeatAssignment {
                    assignee: user(a),
                    assigned_at: at(2027, 1, 2, 0),
                })
                .collect(),
        }
    }

    #[test]
    fn a_month_is_a_calendar_month_clamped_to_the_end_of_a_shorter_one() {
        let monthly = BillingPeriod::Monthly;
        assert_eq!(
            monthly.end_of_period_from(at(2027, 1, 15, 9)),
            Ok(at(2027, 2, 15, 9))
        );
        assert_eq!(
            monthly.end_of_period_from(at(2027, 1, 31, 9)),
            Ok(at(2027, 2, 28, 9))
        );
        assert_eq!(
            monthly.end_of_period_from(at(2028, 1, 31, 9)),
            Ok(at(2028, 2, 29, 9))
        );
        assert_eq!(
            monthly.end_of_period_from(at(2027, 3, 31, 9)),
            Ok(at(2027, 4, 30, 9))
        );
        assert_eq!(
            monthly.end_of_period_from(at(2027, 12, 31, 23)),
            Ok(at(2028, 1, 31, 23))
        );
    }

    #[test]
    fn a_year_is_twelve_calendar_months_and_feb_29_becomes_feb_28() {
        let annual = BillingPeriod::Annual;
        assert_eq!(
            annual.end_of_period_from(at(2027, 6, 1, 0)),
            Ok(at(2028, 6, 1, 0))
        );
        assert_eq!(
            annual.end_of_period_from(at(2028, 2, 29, 12)),
            Ok(at(2029, 2, 28, 12))
        );
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(annual.end_of_period_from(last), Err(PeriodOutOfRange(last)));
    }

    #[test]
    fn a_first_purchase_is_valid_for_one_period_from_now() {
        let now = at(2027, 1, 31, 10);
        let g = grant(now, BillingPeriod::Monthly, &[]).unwrap();
        assert_eq!(
            g.validity,
            Validity {
                from: now,
                until: at(2027, 2, 28, 10)
            }
        );
        assert_eq!(g.renews, None);
    }

    #[test]
    fn expired_entitlements_do_not_extend_a_new_purchase() {
        let now = at(2027, 5, 10, 10);
        let expired = [held(1, at(2027, 4, 1, 0)), held(2, now)];
        let g = grant(now, BillingPeriod::Monthly, &expired).unwrap();
        assert_eq!(
            g.validity,
            Validity {
                from: now,
                until: at(2027, 6, 10, 10)
            }
        );
        assert_eq!(g.renews, None, "an entitlement ending exactly now is over");
    }

    #[test]
    fn renewing_while_active_starts_now_and_extends_from_the_current_end() {
        let now = at(2027, 1, 20, 8);
        let current = held(3, at(2027, 1, 31, 12));
        let g = grant(now, BillingPeriod::Monthly, &[current]).unwrap();
        assert_eq!(g.validity.from, now, "the new seats are usable at once");
        assert_eq!(g.validity.until, at(2027, 2, 28, 12), "Jan 31 + 1 month");
        assert_eq!(g.renews, Some(current.id));
    }

    #[test]
    fn a_chain_extends_from_its_last_end_and_renews_the_one_ending_last() {
        let now = at(2027, 3, 1, 0);
        let chain = [
            held(1, at(2027, 2, 1, 0)),
            held(4, at(2027, 5, 1, 0)),
            held(2, at(2027, 4, 1, 0)),
        ];
        let g = grant(now, BillingPeriod::Monthly, &chain).unwrap();
        assert_eq!(g.validity.until, at(2027, 6, 1, 0));
        assert_eq!(g.renews, Some(id(4)));
        let tie = [held(5, at(2027, 5, 1, 0)), held(4, at(2027, 5, 1, 0))];
        assert_eq!(
            grant(now, BillingPeriod::Monthly, &tie).unwrap().renews,
            Some(id(5))
        );
    }

    #[test]
    fn mixed_billing_periods_extend_each_by_its_own_period() {
        // An annual entitlement renewed after the product became monthly, and back.
        let now = at(2027, 7, 1, 0);
        let annual = held(1, at(2028, 1, 31, 0));
        let monthly = grant(now, BillingPeriod::Monthly, &[annual]).unwrap();
        assert_eq!(
            monthly.validity.until,
            at(2028, 2, 29, 0),
            "leap-year February"
        );
        let again = held(2, monthly.validity.until);
        let yearly = grant(now, BillingPeriod::Annual, &[annual, again]).unwrap();
        assert_eq!(yearly.validity.until, at(2029, 2, 28, 0));
        assert_eq!(yearly.renews, Some(id(2)));
    }

    #[test]
    fn days_left_counts_a_started_day_and_is_zero_once_expired() {
        let v = Validity {
            from: at(2027, 1, 1, 10),
            until: at(2027, 2, 1, 10),
        };
        assert_eq!(v.days_left(at(2027, 1, 1, 10)), 31);
        assert_eq!(v.days_left(at(2027, 1, 31, 22)), 1);
        assert_eq!(v.days_left(at(2027, 2, 1, 10)), 0);
        assert_eq!(v.days_left(at(2027, 3, 1, 0)), 0);
        assert!(v.is_active(at(2027, 1, 1, 10)));
        assert!(!v.is_active(at(2027, 2, 1, 10)));
        assert!(v.is_expired(at(2027, 2, 1, 10)));
    }

    #[test]
    fn the_buyer_holds_a_seat_until_every_seat_is_assigned() {
        let until = at(2027, 2, 1, 0);
        let e = entitlement(3, &[], until);
        assert_eq!(
            (e.seats_used(), e.free_seats(), e.buyer_holds_seat()),
            (1, 2, true)
        );
        let e = entitlement(3, &["ann", "bo"], until);
        assert_eq!(
            (e.seats_used(), e.free_seats(), e.buyer_holds_seat()),
            (3, 0, true)
        );
        let e = entitlement(3, &["ann", "bo", "cy"], until);
        assert_eq!(
            (e.seats_used(), e.free_seats(), e.buyer_holds_seat()),
            (3, 0, false)
        );
        assert!(e.holds_seat(&user("cy")) && !e.holds_seat(&user("buyer")));
        let single = entitlement(1, &[], until);
        assert_eq!((single.seats_used(), single.free_seats()), (1, 0));
    }

    #[test]
    fn assigning_follows_the_rules_in_order() {
        let now = at(2027, 1, 10, 0);
        let until = at(2027, 2, 1, 0);
        let e = entitlement(2, &["ann"], until);
        let (buyer, ann, bo, eve) = (user("buyer"), user("ann"), user("bo"), user("eve"));
        assert_eq!(e.check_assign(&buyer, &bo, now), Ok(()));
        assert_eq!(e.check_assign(&eve, &bo, now), Err(SeatRefusal::NotFound));
        assert_eq!(e.check_assign(&ann, &bo, now), Err(SeatRefusal::NotBuyer));
        assert_eq!(
            e.check_assign(&buyer, &buyer, now),
            Err(SeatRefusal::OwnSeat)
        );
        assert_eq!(
            e.check_assign(&buyer, &ann, now),
            Err(SeatRefusal::AlreadyAssigned)
        );
        assert_eq!(
            e.check_assign(&buyer, &bo, until),
            Err(SeatRefusal::Expired)
        );
        let full = entitlement(2, &["ann", "bo"], until);
        assert_eq!(
            full.check_assign(&buyer, &eve, now),
            Err(SeatRefusal::NoSeatFree { seats: 2 })
        );
    }

    #[test]
    fn revoking_follows_the_rules_and_works_after_expiry() {
        let e = entitlement(2, &["ann"], at(2027, 2, 1, 0));
        let (buyer, ann, bo, eve) = (user("buyer"), user("ann"), user("bo"), user("eve"));
        assert_eq!(e.check_revoke(&buyer, &ann), Ok(()));
        assert_eq!(e.check_revoke(&eve, &ann), Err(SeatRefusal::NotFound));
        assert_eq!(e.check_revoke(&ann, &ann), Err(SeatRefusal::NotBuyer));
        assert_eq!(
            e.check_revoke(&buyer, &buyer),
            Err(SeatRefusal::NotAssigned)
        );
        assert_eq!(e.check_revoke(&buyer, &bo), Err(SeatRefusal::NotAssigned));
        assert!(e.is_visible_to(&ann) && e.is_visible_to(&buyer) && !e.is_visible_to(&eve));
    }

    #[test]
    fn listings_put_active_first_then_upcoming_then_expired() {
        let now = at(2027, 6, 1, 0);
        let with = |n: i64, from: DateTime<Utc>, until: DateTime<Utc>| {
            let mut e = entitlement(1, &[], until);
            e.id = id(n);
            e.validity.from = from;
            e
        };
        let mut list = vec![
            with(1, at(2027, 1, 1, 0), at(2027, 2, 1, 0)),
            with(2, at(2027, 5, 1, 0), at(2027, 9, 1, 0)),
            with(3, at(2027, 1, 1, 0), at(2027, 5, 1, 0)),
            with(4, at(2027, 7, 1, 0), at(2027, 8, 1, 0)),
            with(5, at(2027, 5, 15, 0), at(2027, 6, 15, 0)),
            with(6, at(2027, 5, 20, 0), at(2027, 6, 15, 0)),
        ];
        sort_for_listing(&mut list, now);
        let order: Vec<i64> = list.iter().map(|e| e.id.get()).collect();
        assert_eq!(order, [5, 6, 2, 4, 3, 1]);
    }

    #[test]
    fn assignees_must_look_like_a_user_id() {
        assert_eq!(parse_assignee("ann").unwrap().as_str(), "ann");
        assert_eq!(
            parse_assignee("ann@contoso.example").unwrap().as_str(),
            "ann@contoso.example"
        );
        assert_eq!(parse_assignee(""), Err(AssigneeError::Empty));
        assert_eq!(parse_assignee("  "), Err(AssigneeError::Empty));
        assert_eq!(parse_assignee(" ann"), Err(AssigneeError::Malformed));
        assert_eq!(parse_assignee("an\nn"), Err(AssigneeError::Malformed));
        assert_eq!(parse_assignee("ann\t"), Err(AssigneeError::Malformed));
        assert_eq!(parse_assignee("änn"), Err(AssigneeError::Malformed));
        assert_eq!(parse_assignee("John Smith").unwrap().as_str(), "John Smith");
        assert_eq!(parse_assignee("auth0|5f7c").unwrap().as_str(), "auth0|5f7c");
        assert_eq!(
            parse_assignee(&"x".repeat(MAX_USER_ID_LEN + 1)),
            Err(AssigneeError::TooLong)
        );
        assert!(parse_assignee(&"x".repeat(MAX_USER_ID_LEN)).is_ok());
    }
}
