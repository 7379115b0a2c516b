//! What both test binaries of accept-svc share: users and their bearer tokens.

use std::time::Duration;

use contoso_domain::UserId;
use contoso_platform::auth::Authenticator;
use tonic::Request;

pub(crate) fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// `message` as a call of `who`, with a token from `auth`.
pub(crate) fn as_user<T>(auth: &Authenticator, who: &str, message: T) -> Request<T> {
    let token = auth.issue(&user(who), Duration::from_secs(60)).unwrap();
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
