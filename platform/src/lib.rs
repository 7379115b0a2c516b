//! What every Contoso gRPC service shares and no adapter needs: bearer-token authentication, the
//! sealed customer reference, the gRPC server scaffolding (health, reflection, grpc-web, probes,
//! drain), client-facing gRPC statuses, telemetry and shutdown. It compiles no broker, cache or
//! database client: those live in `contoso-bus`, `contoso-state`, `contoso-backplane` and
//! `contoso-store`.

pub mod auth;
pub mod grpc_status;
pub mod seal;
pub mod server;
pub mod shutdown;
pub mod telemetry;
