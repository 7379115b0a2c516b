DROP INDEX IF EXISTS outbox_published_idx;
