//! Fixtures of the end-to-end tests: processes, a minimal HTTP client, curl for the REST API, the two RPC clients and the
//! systems under test.

pub(crate) mod faults;
pub(crate) mod http;
pub(crate) mod load;
pub(crate) mod metrics;
pub(crate) mod otlp;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod rest;
pub(crate) mod rpc;
pub(crate) mod system;
