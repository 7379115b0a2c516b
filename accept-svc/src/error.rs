//! accept-svc's one error type, mapped to a gRPC status in one place, and paging parsed at the edge.

use contoso_bus::BusError;
use contoso_domain::{OrderId, SeatRefusal};
use contoso_platform::{
    grpc_status::{internal, invalid_argument, not_found_field, unavailable},
    seal::SealError,
};
use contoso_state::StateError;
use contoso_store::{SeatError, StoreError};
use tonic::Status;

/// Page size when the request names none.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page a client may ask for.
pub(crate) const MAX_PAGE_SIZE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A request field names something that does not exist (an unknown product).
    #[error("{field}: {message}")]
    UnknownReference { field: String, message: String },
    #[error("a request with this idempotency key is still in progress")]
    InFlight,
    #[error(
        "idempotency key {0:?} was already used for a different order; use a new key for a new order"
    )]
    KeyReused(String),
    #[error("order {0} is still being processed; delete it once it is completed")]
    StillProcessing(OrderId),
    #[error("no order id could be reserved in time")]
    NoOrderId,
    /// A seat assignment or revocation the entitlement rules refused.
    #[error(transparent)]
    Seat(SeatRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl ApiError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<SeatError> for ApiError {
    fn from(err: SeatError) -> Self {
        match err {
            SeatError::Refused(refusal) => Self::Seat(refusal),
            SeatError::Store(e) => Self::Store(e),
        }
    }
}

/// The status of a refused seat change (decision 16): unknown or unseen entitlements and users
/// without a seat are NOT_FOUND, a learner managing seats PERMISSION_DENIED, a bad `user_id`
/// INVALID_ARGUMENT naming it, and what the entitlement's state forbids (no seat free, expired)
/// FAILED_PRECONDITION.
fn seat_status(refusal: &SeatRefusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        SeatRefusal::NotFound | SeatRefusal::NotAssigned => Status::not_found(message),
        SeatRefusal::NotBuyer => Status::permission_denied(message),
        SeatRefusal::OwnSeat | SeatRefusal::AlreadyAssigned => invalid_argument("user_id", message),
        SeatRefusal::Expired | SeatRefusal::NoSeatFree { .. } => {
            Status::failed_precondition(message)
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::Invalid { field, message } => invalid_argument(&field, message),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::UnknownReference { field, message } => not_found_field(&field, message),
            ApiError::InFlight => Status::aborted(err.to_string()),
            ApiError::KeyReused(_) => Status::already_exists(err.to_string()),
            ApiError::StillProcessing(_) => Status::failed_precondition(err.to_string()),
            ApiError::NoOrderId => unavailable("order id reservation", &err),
            ApiError::Seat(refusal) => seat_status(&refusal),
            ApiError::Store(e @ StoreError::Unavailable { .. }) => {
                unavailable("the order database", &e)
            }
            ApiError::Store(e) => internal("reading orders", &e),
            ApiError::State(e @ StateError::Unavailable { .. }) => {
                unavailable("the workflow state store", &e)
            }
            ApiError::State(e) => internal("reading workflow state", &e),
            ApiError::Bus(e) => unavailable("the order broker", &e),
            ApiError::Seal(e) => internal("sealing the customer reference", &e),
        }
    }
}

/// Offset and size of a page, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    pub(crate) offset: usize,
    pub(crate) size: usize,
}

impl Paging {
    /// `size` 0 means the default; negative values and sizes over the maximum are refused.
    pub(crate) fn parse(offset: i32, size: i32) -> Result<Self, Status> {
        let offset =
            usize::try_from(offset).map_err(|_| invalid_argument("offset", "must be 0 or more"))?;
        let size = match usize::try_from(size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(s) if s <= MAX_PAGE_SIZE => s,
            _ => {
                return Err(invalid_argument(
                    "size",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                ));
            }
        };
        Ok(Self { offset, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            Paging::parse(0, 0).unwrap(),
            Paging {
                offset: 0,
                size: DEFAULT_PAGE_SIZE
            }
        );
        assert_eq!(
            Paging::parse(5, 100).unwrap(),
            Paging {
                offset: 5,
                size: 100
            }
        );
        assert!(
            Paging::parse(-1, 10)
                .unwrap_err()
                .message()
                .contains("offset")
        );
        assert!(
            Paging::parse(0, 101)
                .unwrap_err()
                .message()
                .contains("size")
        );
        assert!(Paging::parse(0, -3).unwrap_err().message().contains("size"));
    }

    #[test]
    fn seat_refusals_map_to_the_documented_codes() {
        use tonic::Code;
        for (refusal, code) in [
            (SeatRefusal::NotFound, Code::NotFound),
            (SeatRefusal::NotAssigned, Code::NotFound),
            (SeatRefusal::NotBuyer, Code::PermissionDenied),
            (SeatRefusal::OwnSeat, Code::InvalidArgument),
            (SeatRefusal::AlreadyAssigned, Code::InvalidArgument),
            (SeatRefusal::Expired, Code::FailedPrecondition),
            (
                SeatRefusal::NoSeatFree { seats: 3 },
                Code::FailedPrecondition,
            ),
        ] {
            let status: Status = ApiError::from(SeatError::Refused(refusal.clone())).into();
            assert_eq!(status.code(), code, "{refusal:?}");
        }
        let full: Status = ApiError::Seat(SeatRefusal::NoSeatFree { seats: 3 }).into();
        assert!(
            full.message().contains("no seat is free"),
            "{}",
            full.message()
        );
        let own: Status = ApiError::Seat(SeatRefusal::OwnSeat).into();
        assert!(own.message().starts_with("user_id: "), "{}", own.message());
    }

    #[test]
    fn infrastructure_errors_do_not_leak_their_text() {
        let status: Status =
            ApiError::Store(StoreError::unavailable("connecting", "password=hunter2")).into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("hunter2"));
    }
}
