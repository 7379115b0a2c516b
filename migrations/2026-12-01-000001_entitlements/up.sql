-- Entitlements (docs/decisions.md, decision 16): what a recorded order gives its buyer. process-svc
-- grants one per order line in the transaction that records the order; the order line is unique
-- here, so a redelivered or replayed event can never grant twice. Soft-deleting the order touches
-- neither table.

CREATE TABLE entitlements (
    id          bigserial   PRIMARY KEY,
    customer_id bigint      NOT NULL REFERENCES customers (id),
    product_id  text        NOT NULL REFERENCES products (id),
    seats       integer     NOT NULL CONSTRAINT entitlements_seats_check CHECK (seats > 0),
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    order_id    bigint      NOT NULL,
    line_no     integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entitlements_validity_check CHECK (valid_from < valid_until),
    CONSTRAINT entitlements_order_line_key UNIQUE (order_id, line_no),
    CONSTRAINT entitlements_order_line_fkey
        FOREIGN KEY (order_id, line_no) REFERENCES order_items (order_id, line_no)
);

-- The renewal rule reads a buyer's entitlements to one product by end; listings read a buyer's.
CREATE INDEX entitlements_customer_product_idx
    ON entitlements (customer_id, product_id, valid_until DESC);

-- Seats given by the buyer to other users (by their token `sub`, who may never have ordered). No
-- more rows per entitlement than its seats: an assignment locks its entitlement row (FOR UPDATE)
-- to count and insert, so concurrent ones are serialised.
CREATE TABLE seat_assignments (
    entitlement_id bigint      NOT NULL REFERENCES entitlements (id) ON DELETE CASCADE,
    assignee       text        NOT NULL
        CONSTRAINT seat_assignments_assignee_check CHECK (length(assignee) BETWEEN 1 AND 200),
    assigned_at    timestamptz NOT NULL,
    CONSTRAINT seat_assignments_pkey PRIMARY KEY (entitlement_id, assignee)
);

-- What a learner was given, for their listing.
CREATE INDEX seat_assignments_assignee_idx ON seat_assignments (assignee);
