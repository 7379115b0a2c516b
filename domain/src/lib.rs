//! The business vocabulary of Contoso Orders, at the bottom of the crate graph: identifiers, the
//! order status and its forward-only transitions, money in minor units, products, order lines and
//! the rules of a valid order. Requests are parsed into these types at the edge (`TryFrom`), and
//! nothing past the edge re-validates them. No I/O happens here.

pub mod entitlement;
pub mod ids;
pub mod money;
pub mod order;
pub mod product;
pub mod report;
pub mod status;

pub use entitlement::{
    AssigneeError, Entitlement, EntitlementId, Grant, Held, PeriodOutOfRange, SeatAssignment,
    SeatRefusal, Validity, grant, parse_assignee, sort_for_listing,
};
pub use ids::{CorrelationId, MAX_USER_ID_LEN, OrderId, UserId, UserIdError};
pub use order::{
    LineRequest, MAX_LINES, NewOrder, OrderLine, OrderRecord, OrderRuleViolation, PricedOrder,
    Quantity, QuantityOutOfRange, checked_order_total, price_lines,
};
pub use product::{BillingPeriod, Product};
pub use report::{Cause, Report};
pub use status::{OrderStatus, StatusUpdate, UnknownStatus};
