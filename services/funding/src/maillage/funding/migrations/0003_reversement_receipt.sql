-- A reversement is followed until the money is back: the comptable records its receipt.
ALTER TABLE reversements
    ADD COLUMN received_at  timestamptz,
    ADD COLUMN received_by  text,
    ADD CONSTRAINT reversements_received CHECK ((status = 'received') = (received_at IS NOT NULL));
