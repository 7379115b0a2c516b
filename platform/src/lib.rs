//! Cross-cutting pieces shared by every Contoso service: the domain identifiers, authentication,
//! the sealed customer reference, telemetry, shutdown, the gRPC server scaffolding, and the three
//! infrastructure seams (bus, workflow state, status backplane) with their in-memory and real
//! adapters.

pub mod auth;
pub mod backplane;
pub mod bus;
pub mod config;
pub mod domain;
pub mod grpc_status;
pub mod seal;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
