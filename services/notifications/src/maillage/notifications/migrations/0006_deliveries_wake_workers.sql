-- Queued deliveries wake the delivery workers at once: each worker LISTENs on this channel
-- (NOTIFY is sent at commit, once per transaction however many rows it queued) and polls only
-- for the retries that come due later.
CREATE FUNCTION notify_deliveries_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notifications_deliveries_due', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_due AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notify_deliveries_due();
