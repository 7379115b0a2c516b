//! The REST API's OpenAPI 3.1 document, generated from the handlers and types (`GET /openapi.json`),
//! and an interactive docs page (`GET /docs`: Swagger UI, whose assets are compiled into the
//! gateway, so it works with no internet).

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{entitlements, events, orders, products};
use crate::{dev_token, problem::Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Contoso Orders REST API",
        description = "The shop's catalog, orders and entitlements over HTTP: the original order-accept \
                       contract. Errors are application/problem+json (RFC 9457). Order and entitlement \
                       endpoints need a bearer token.",
    ),
    paths(
        products::list, products::get,
        orders::place, orders::list, orders::get, orders::delete, orders::status,
        events::stream,
        entitlements::list, entitlements::assign, entitlements::revoke,
    ),
    components(schemas(Problem, events::StatusEvent)),
    modifiers(&BearerScheme),
    tags(
        (name = "catalog", description = "The public product catalog"),
        (name = "orders", description = "The caller's orders and their live status"),
        (name = "entitlements", description = "What completed orders give the caller, and the seats a buyer hands to other learners"),
    ),
)]
struct RestApi;

#[derive(OpenApi)]
#[openapi(
    paths(dev_token::issue),
    tags((name = "dev", description = "Development login (DEV_AUTH=true only)")),
)]
struct DevApi;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A token whose `sub` is the user (in dev mode, from POST /dev/token)",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document; the dev login is in it only when its route is on.
pub(crate) fn document(dev_auth: bool) -> utoipa::openapi::OpenApi {
    let mut doc = RestApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if dev_auth {
        doc.merge(DevApi::openapi());
    }
    doc
}

/// `/openapi.json` and `/docs`.
pub(crate) fn router(dev_auth: bool) -> Router {
    let config = Config::new(["/openapi.json"])
        .validator_url("none")
        .try_it_out_enabled(true)
        .persist_authorization(true);
    SwaggerUi::new("/docs")
        .url("/openapi.json", document(dev_auth))
        .config(config)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_the_bearer_scheme() {
        let doc = serde_json::to_value(document(false)).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/api/products",
            "/api/products/{id}",
            "/api/orders",
            "/api/orders/{id}",
            "/api/orders/status/{correlationId}",
            "/api/orders/events",
            "/api/entitlements",
            "/api/entitlements/{id}/seats",
            "/api/entitlements/{id}/seats/{userId}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["paths"].get("/dev/token").is_none());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(document(true).paths.paths.contains_key("/dev/token"));
    }
}
