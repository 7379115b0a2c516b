//! Diesel's view of the tables in `migrations/`, written by hand to match `up.sql` column for
//! column (there is no diesel CLI in the build). The Postgres tests run every query here against
//! the migrated schema, so a drift shows up as a failing test rather than at runtime.

diesel::table! {
    customers (id) {
        id -> Int8,
        external_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    products (id) {
        id -> Text,
        name -> Text,
        category -> Text,
        vendor -> Text,
        image_url -> Text,
        discount_percent -> Int4,
        billing_period -> Text,
        subscription -> Bool,
        price_cents -> Int8,
        currency -> Text,
        active -> Bool,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Int8,
        correlation_id -> Uuid,
        customer_id -> Int8,
        status -> Text,
        total_cents -> Int8,
        currency -> Text,
        deleted -> Bool,
        accepted_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    order_items (order_id, line_no) {
        order_id -> Int8,
        line_no -> Int4,
        product_id -> Text,
        product_name -> Text,
        quantity -> Int4,
        unit_price_cents -> Int8,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        correlation_id -> Uuid,
        order_id -> Int8,
        kind -> Text,
        payload -> Bytea,
        created_at -> Timestamptz,
        leased_until -> Nullable<Timestamptz>,
        published_at -> Nullable<Timestamptz>,
        traceparent -> Nullable<Text>,
    }
}

diesel::table! {
    entitlements (id) {
        id -> Int8,
        customer_id -> Int8,
        product_id -> Text,
        seats -> Int4,
        valid_from -> Timestamptz,
        valid_until -> Timestamptz,
        order_id -> Int8,
        line_no -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    seat_assignments (entitlement_id, assignee) {
        entitlement_id -> Int8,
        assignee -> Text,
        assigned_at -> Timestamptz,
    }
}

diesel::joinable!(orders -> customers (customer_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (product_id));
diesel::joinable!(outbox -> orders (order_id));

diesel::joinable!(entitlements -> customers (customer_id));
diesel::joinable!(seat_assignments -> entitlements (entitlement_id));

diesel::allow_tables_to_appear_in_same_query!(
    customers,
    products,
    orders,
    order_items,
    outbox,
    entitlements,
    seat_assignments,
);
