CREATE INDEX orders_customer_created_idx
    ON orders (customer_id, created_at DESC)
    WHERE NOT deleted;

DROP INDEX orders_customer_accepted_idx;
