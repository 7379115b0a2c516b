-- The system of record. The catalog rows are not inserted here: `contoso_store::postgres::migrate`
-- upserts them from store/data/products.json right after the migrations, in the same transaction.

CREATE TABLE customers (
    id          bigserial   PRIMARY KEY,
    external_id text        NOT NULL CONSTRAINT customers_external_id_key UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id               text        PRIMARY KEY,
    name             text        NOT NULL,
    category         text        NOT NULL,
    vendor           text        NOT NULL,
    image_url        text        NOT NULL,
    discount_percent integer     NOT NULL
        CONSTRAINT products_discount_percent_check CHECK (discount_percent BETWEEN 0 AND 100),
    billing_period   text        NOT NULL
        CONSTRAINT products_billing_period_check CHECK (billing_period IN ('Monthly', 'Annual')),
    subscription     boolean     NOT NULL,
    price_cents      bigint      NOT NULL
        CONSTRAINT products_price_cents_check CHECK (price_cents >= 0),
    currency         text        NOT NULL
        CONSTRAINT products_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    active           boolean     NOT NULL DEFAULT true,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Hi/lo: each nextval hands out the first id of a block of 100 (ORDER_ID_BLOCK_SIZE in Rust);
-- accept-svc owns the whole block, so intake needs one round trip per 100 orders.
CREATE SEQUENCE order_id_blocks INCREMENT BY 100 START WITH 1;

CREATE TABLE orders (
    -- No default: the id is reserved from order_id_blocks at intake and arrives with the event.
    id             bigint      PRIMARY KEY CONSTRAINT orders_id_check CHECK (id > 0),
    correlation_id uuid        NOT NULL CONSTRAINT orders_correlation_id_key UNIQUE,
    customer_id    bigint      NOT NULL REFERENCES customers (id),
    status         text        NOT NULL
        CONSTRAINT orders_status_check
        CHECK (status IN ('ACCEPTED', 'PROCESSING', 'COMPLETED', 'FAILED')),
    total_cents    bigint      NOT NULL CONSTRAINT orders_total_cents_check CHECK (total_cents >= 0),
    currency       text        NOT NULL
        CONSTRAINT orders_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    deleted        boolean     NOT NULL DEFAULT false,
    accepted_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_customer_created_idx
    ON orders (customer_id, created_at DESC)
    WHERE NOT deleted;

CREATE TABLE order_items (
    order_id         bigint  NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          integer NOT NULL CONSTRAINT order_items_line_no_check CHECK (line_no > 0),
    product_id       text    NOT NULL REFERENCES products (id),
    product_name     text    NOT NULL,
    quantity         integer NOT NULL
        CONSTRAINT order_items_quantity_check CHECK (quantity > 0 AND quantity <= 100),
    unit_price_cents bigint  NOT NULL
        CONSTRAINT order_items_unit_price_cents_check CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    correlation_id uuid        NOT NULL,
    order_id       bigint      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    kind           text        NOT NULL,
    payload        bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    leased_until   timestamptz,
    published_at   timestamptz
);

-- The relay only ever scans unpublished rows; published ones stay for audit without slowing it.
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
