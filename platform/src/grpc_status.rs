//! Building client-facing gRPC statuses: INVALID_ARGUMENT carries a `BadRequest` detail naming the
//! offending field (tonic-types rich error model), and internal failures never leak their text.

use std::error::Error;

use contoso_domain::Report;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT with a field violation, e.g. `invalid_argument("lines[2].quantity", "must be 1..=100")`.
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// NOT_FOUND for something a request field names, e.g. an unknown product on an order line: the
/// same `BadRequest` detail as [`invalid_argument`], so clients can point at the field.
pub fn not_found_field(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::NotFound,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// UNAVAILABLE for a dependency that failed; the cause and its sources go to the log, not to
/// the client.
pub fn unavailable(what: &str, cause: &(dyn Error + 'static)) -> Status {
    tracing::warn!(error = %Report(cause), "{what} unavailable");
    Status::unavailable(format!("{what} is unavailable; retry later"))
}

/// INTERNAL for a bug or corrupt data; the cause and its sources go to the log, not to the
/// client.
pub fn internal(what: &str, cause: &(dyn Error + 'static)) -> Status {
    tracing::error!(error = %Report(cause), "{what} failed");
    Status::internal(format!("{what} failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status = invalid_argument("lines[0].quantity", "must be between 1 and 100");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("lines[0].quantity"));
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "lines[0].quantity");
    }

    #[test]
    fn not_found_field_names_the_field_in_its_details() {
        let status = not_found_field(
            "lines[1].product_id",
            "product \"NOPE\" is not in the catalog",
        );
        assert_eq!(status.code(), Code::NotFound);
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "lines[1].product_id"
        );
    }

    #[test]
    fn unavailable_hides_the_cause() {
        let cause = std::io::Error::other("connection refused at 10.0.0.7:4222");
        let status = unavailable("the broker", &cause);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.7"));
    }
}
