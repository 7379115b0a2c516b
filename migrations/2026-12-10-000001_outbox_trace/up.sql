-- The W3C traceparent of the span that recorded the order, so the relay's publish of
-- orders.processed continues the order's trace (NULL when the recorder did not trace).
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
