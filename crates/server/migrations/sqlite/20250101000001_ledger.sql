-- The provider ledger (SQLite). Amounts and counters are u64 stored as INTEGER (i64) through a
-- checked conversion: values above i64::MAX are refused by the application, never wrapped.
-- Addresses, hashes and signatures are raw bytes.

CREATE TABLE sessions (
    address              BLOB    NOT NULL PRIMARY KEY CHECK (length(address) = 32),
    agent                BLOB    NOT NULL,
    provider             BLOB    NOT NULL,
    mint                 BLOB    NOT NULL,
    token_program        BLOB    NOT NULL,
    voucher_signer       BLOB    NOT NULL,
    deposit              INTEGER NOT NULL CHECK (deposit >= 0),
    refunded             INTEGER NOT NULL CHECK (refunded >= 0),
    claimed              INTEGER NOT NULL CHECK (claimed >= 0),
    claimed_seq          INTEGER NOT NULL CHECK (claimed_seq >= 0),
    price_per_request    INTEGER NOT NULL CHECK (price_per_request >= 0),
    max_latency_ms       INTEGER NOT NULL CHECK (max_latency_ms >= 0),
    expires_at           INTEGER NOT NULL,
    close_requested_at   INTEGER NOT NULL,
    grace_secs           INTEGER NOT NULL CHECK (grace_secs >= 0),
    state                TEXT    NOT NULL CHECK (state IN ('open', 'closing', 'closed')),
    -- The provider's accepted state (never written by a chain refresh).
    last_seq             INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    accepted             INTEGER NOT NULL DEFAULT 0 CHECK (accepted >= 0),
    receipts_head        BLOB    NOT NULL,
    receipt_count        INTEGER NOT NULL DEFAULT 0 CHECK (receipt_count >= 0),
    best_seq             INTEGER,
    -- Unix seconds: row creation, last confirmed claim (creation before the first).
    created_at           INTEGER NOT NULL,
    last_claim_at        INTEGER NOT NULL
);

CREATE INDEX sessions_state ON sessions (state);

CREATE TABLE vouchers (
    session      BLOB    NOT NULL REFERENCES sessions (address),
    seq          INTEGER NOT NULL CHECK (seq > 0),
    cumulative   INTEGER NOT NULL CHECK (cumulative >= 0),
    signature    BLOB    NOT NULL CHECK (length(signature) = 64),
    accepted_at  INTEGER NOT NULL,
    PRIMARY KEY (session, seq)
);

CREATE TABLE receipts (
    session             BLOB    NOT NULL REFERENCES sessions (address),
    seq                 INTEGER NOT NULL CHECK (seq > 0),
    hash                BLOB    NOT NULL CHECK (length(hash) = 32),
    ok                  BOOLEAN NOT NULL,
    amount_charged      INTEGER NOT NULL CHECK (amount_charged >= 0),
    cumulative_charged  INTEGER NOT NULL CHECK (cumulative_charged >= 0),
    json                TEXT    NOT NULL,
    recorded_at         INTEGER NOT NULL,
    PRIMARY KEY (session, seq)
);

CREATE TABLE claims (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    session                  BLOB    NOT NULL REFERENCES sessions (address),
    voucher_seq              INTEGER NOT NULL,
    voucher_cumulative       INTEGER NOT NULL,
    voucher_signature        BLOB    NOT NULL,
    receipts_head            BLOB    NOT NULL,
    receipt_count            INTEGER NOT NULL,
    tx_signature             TEXT    NOT NULL UNIQUE,
    -- The transaction's blockhash and the last block height at which it can land, when known.
    blockhash                TEXT,
    last_valid_block_height  INTEGER,
    status                   TEXT    NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed')),
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);

CREATE INDEX claims_pending ON claims (status) WHERE status = 'pending';
CREATE INDEX claims_session ON claims (session);

-- `exact` payments settled through the facilitator.
CREATE TABLE settlements (
    tx_signature   TEXT    NOT NULL PRIMARY KEY,
    payer          TEXT    NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    resource       TEXT    NOT NULL,
    settled_at_ms  INTEGER NOT NULL
);
