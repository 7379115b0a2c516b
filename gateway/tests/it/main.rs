//! The gateway's integration tests, one binary: the HTTP routes through `http_router` with
//! `oneshot`, and the gRPC / grpc-web forwarding against a running gateway on port 0 in front of a
//! small upstream double.

mod entitlements;
mod forwarding;
mod http_routes;
mod rest_layers;
mod support;
