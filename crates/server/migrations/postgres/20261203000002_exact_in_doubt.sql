-- `exact` payments that may have been charged without being served (issue 18): a facilitator
-- answered that the payment was already settled without naming the transaction (the official
-- facilitator's `duplicate_settlement` with `transaction: ""`), or reported it pending and it
-- did not confirm in time. The request was refused (nothing proves the payment); the row is the
-- operator's record for reconciliation, never a silent loss. `message_hash` (hex sha256 of the
-- payment transaction's message) identifies the transaction on chain.
CREATE TABLE exact_in_doubt (
    message_hash    TEXT    NOT NULL PRIMARY KEY,
    payer           TEXT    NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    resource        TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    recorded_at_ms  BIGINT NOT NULL
);
