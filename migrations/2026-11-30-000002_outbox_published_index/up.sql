-- The relay prunes published outbox rows after a retention period (OUTBOX_RETENTION_HOURS); this
-- finds the old ones without scanning the pending ones or the whole table.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
