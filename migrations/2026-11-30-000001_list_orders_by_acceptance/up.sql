-- ListOrders pages a customer's orders newest first by acceptance time (`accepted_at DESC, id DESC`)
-- rather than by record time, so an order keeps its place when process-svc records it after
-- accept-svc listed it from the in-flight set (docs/decisions.md, read-your-writes). The old
-- index on `created_at` serves no query any more.
CREATE INDEX orders_customer_accepted_idx
    ON orders (customer_id, accepted_at DESC, id DESC)
    WHERE NOT deleted;

DROP INDEX orders_customer_created_idx;
