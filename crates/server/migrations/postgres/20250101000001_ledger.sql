-- The provider ledger (PostgreSQL). Amounts and counters are u64 stored as BIGINT through a
-- checked conversion: values above i64::MAX are refused by the application, never wrapped.
-- Addresses, hashes and signatures are raw bytes.

CREATE TABLE sessions (
    address              BYTEA   NOT NULL PRIMARY KEY CHECK (length(address) = 32),
    agent                BYTEA   NOT NULL,
    provider             BYTEA   NOT NULL,
    mint                 BYTEA   NOT NULL,
    token_program        BYTEA   NOT NULL,
    voucher_signer       BYTEA   NOT NULL,
    deposit              BIGINT  NOT NULL CHECK (deposit >= 0),
    refunded             BIGINT  NOT NULL CHECK (refunded >= 0),
    claimed              BIGINT  NOT NULL CHECK (claimed >= 0),
    claimed_seq          BIGINT  NOT NULL CHECK (claimed_seq >= 0),
    price_per_request    BIGINT  NOT NULL CHECK (price_per_request >= 0),
    max_latency_ms       BIGINT  NOT NULL CHECK (max_latency_ms >= 0),
    expires_at           BIGINT  NOT NULL,
    close_requested_at   BIGINT  NOT NULL,
    grace_secs           BIGINT  NOT NULL CHECK (grace_secs >= 0),
    state                TEXT    NOT NULL CHECK (state IN ('open', 'closing', 'closed')),
    -- The provider's accepted state (never written by a chain refresh).
    last_seq             BIGINT  NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    accepted             BIGINT  NOT NULL DEFAULT 0 CHECK (accepted >= 0),
    receipts_head        BYTEA   NOT NULL,
    receipt_count        BIGINT  NOT NULL DEFAULT 0 CHECK (receipt_count >= 0),
    best_seq             BIGINT,
    -- Unix seconds: row creation, last confirmed claim (creation before the first).
    created_at           BIGINT  NOT NULL,
    last_claim_at        BIGINT  NOT NULL
);

CREATE INDEX sessions_state ON sessions (state);

CREATE TABLE vouchers (
    session      BYTEA   NOT NULL REFERENCES sessions (address),
    seq          BIGINT  NOT NULL CHECK (seq > 0),
    cumulative   BIGINT  NOT NULL CHECK (cumulative >= 0),
    signature    BYTEA   NOT NULL CHECK (length(signature) = 64),
    accepted_at  BIGINT  NOT NULL,
    PRIMARY KEY (session, seq)
);

CREATE TABLE receipts (
    session             BYTEA   NOT NULL REFERENCES sessions (address),
    seq                 BIGINT  NOT NULL CHECK (seq > 0),
    hash                BYTEA   NOT NULL CHECK (length(hash) = 32),
    ok                  BOOLEAN NOT NULL,
    amount_charged      BIGINT  NOT NULL CHECK (amount_charged >= 0),
    cumulative_charged  BIGINT  NOT NULL CHECK (cumulative_charged >= 0),
    json                TEXT    NOT NULL,
    recorded_at         BIGINT  NOT NULL,
    PRIMARY KEY (session, seq)
);

CREATE TABLE claims (
    id                       BIGSERIAL PRIMARY KEY,
    session                  BYTEA   NOT NULL REFERENCES sessions (address),
    voucher_seq              BIGINT  NOT NULL,
    voucher_cumulative       BIGINT  NOT NULL,
    voucher_signature        BYTEA   NOT NULL,
    receipts_head            BYTEA   NOT NULL,
    receipt_count            BIGINT  NOT NULL,
    tx_signature             TEXT    NOT NULL UNIQUE,
    -- The transaction's blockhash and the last block height at which it can land, when known.
    blockhash                TEXT,
    last_valid_block_height  BIGINT,
    status                   TEXT    NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed')),
    created_at               BIGINT  NOT NULL,
    updated_at               BIGINT  NOT NULL
);

CREATE INDEX claims_pending ON claims (status) WHERE status = 'pending';
CREATE INDEX claims_session ON claims (session);

-- `exact` payments settled through the facilitator.
CREATE TABLE settlements (
    tx_signature   TEXT    NOT NULL PRIMARY KEY,
    payer          TEXT    NOT NULL,
    amount         BIGINT  NOT NULL CHECK (amount >= 0),
    resource       TEXT    NOT NULL,
    settled_at_ms  BIGINT  NOT NULL
);
