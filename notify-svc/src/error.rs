//! The errors of `WatchOrderStatus`, mapped to gRPC statuses in one place. Infrastructure causes
//! go to the log; the client gets a code and a generic message.

use contoso_backplane::BackplaneError;
use contoso_platform::grpc_status;
use contoso_state::StateError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("at most {max} correlation ids per request")]
    TooManyIds { max: usize },
    #[error("correlation_ids[{index}] is not a UUID")]
    InvalidCorrelationId { index: usize },
    #[error("at most {max} open streams per user")]
    TooManyStreams { max: usize },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
}

impl From<WatchError> for Status {
    fn from(error: WatchError) -> Self {
        match error {
            WatchError::TooManyIds { max } => grpc_status::invalid_argument(
                "correlation_ids",
                format!("at most {max} correlation ids per request"),
            ),
            WatchError::InvalidCorrelationId { index } => grpc_status::invalid_argument(
                &format!("correlation_ids[{index}]"),
                "must be a UUID",
            ),
            WatchError::TooManyStreams { max } => Status::resource_exhausted(format!(
                "at most {max} open status streams per user; close one first"
            )),
            WatchError::State(cause) => grpc_status::unavailable("order status", &cause),
            WatchError::Backplane(cause) => grpc_status::unavailable("live status updates", &cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn a_bad_id_names_its_index_in_the_field_violation() {
        let status = Status::from(WatchError::InvalidCorrelationId { index: 3 });
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(violations[0].field, "correlation_ids[3]");
    }

    #[test]
    fn infrastructure_failures_do_not_leak_their_cause() {
        let status = Status::from(WatchError::State(StateError::Unavailable {
            context: "reading an order's owner".into(),
            source: "redis at 10.1.2.3:6379 refused".into(),
        }));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.1.2.3"));
    }
}
