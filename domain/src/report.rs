//! Infrastructure errors keep their cause ([`Cause`]) so that an operator's log shows the whole
//! chain ([`Report`]); clients only ever see a generic message built at the edge.

use std::{error::Error, fmt};

/// The underlying error of an infrastructure failure (a driver's, a client library's), kept as
/// the `#[source]` of the crate's own error type. A plain message converts with `.into()`.
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// Displays an error followed by each of its sources: `outer: middle: root`. For logs only.
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading order 7")]
    struct Outer(#[source] Cause);

    #[test]
    fn report_lists_every_source_in_order() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Outer(Box::new(Outer(Box::new(root))));
        assert_eq!(
            Report(&err).to_string(),
            "reading order 7: reading order 7: connection refused"
        );
    }

    #[test]
    fn a_message_becomes_a_cause() {
        let err = Outer("scripted outage".into());
        assert_eq!(Report(&err).to_string(), "reading order 7: scripted outage");
    }
}
