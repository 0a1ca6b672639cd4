-- Trust v2 (docs/program.md): the escrow program holds every token back until `finalize`, so the
-- session's books are what the provider proved (the settled voucher) and what disputes recorded
-- (penalties), not what was paid; closing starts at the agent's request or the provider's close.
-- Every session address also has an incarnation (the slot it was opened in) that vouchers and
-- receipts sign, and the offer's input bound and penalty, which a route's terms must match.
ALTER TABLE sessions RENAME COLUMN refunded TO penalties;
ALTER TABLE sessions RENAME COLUMN claimed TO settled;
ALTER TABLE sessions RENAME COLUMN claimed_seq TO settled_seq;
ALTER TABLE sessions RENAME COLUMN close_requested_at TO closing_started_at;
ALTER TABLE sessions ADD COLUMN opened_slot BIGINT NOT NULL DEFAULT 0 CHECK (opened_slot >= 0);
ALTER TABLE sessions ADD COLUMN max_input_bytes BIGINT NOT NULL DEFAULT 0 CHECK (max_input_bytes >= 0);
ALTER TABLE sessions ADD COLUMN latency_penalty_bps BIGINT NOT NULL DEFAULT 0
    CHECK (latency_penalty_bps >= 0);
