-- `exact` payments that carried an x402 `payment-identifier` (issue 18): the payment it named
-- (the sha256 of its transaction's message), the resource, the settlement and the answer served,
-- so that a retry of the same payment is answered the same way without a second settlement, and
-- the id cannot be reused for another payment.
CREATE TABLE exact_payment_ids (
    payment_id        TEXT    NOT NULL PRIMARY KEY,
    message_hash      TEXT    NOT NULL,
    resource          TEXT    NOT NULL,
    tx_signature      TEXT    NOT NULL,
    payment_response  TEXT    NOT NULL,
    status            BIGINT NOT NULL,
    content_type      TEXT,
    body              BYTEA    NOT NULL,
    created_at_ms     BIGINT NOT NULL
);
