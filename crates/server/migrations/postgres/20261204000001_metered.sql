-- Metered sessions (issue 16, docs/program.md "Metered sessions"): a session's signed usage prices
-- (29 bytes: unit_price_in u64 ‖ unit_price_out u64 ‖ unit_size u32 ‖ max_per_request u64 ‖
-- unit_kind u8, little-endian; NULL for a fixed price) and each v3 voucher's `accepted` (the
-- cumulative of the receipts the agent verified; NULL for a v2 voucher). The triggers are
-- unchanged: a metered receipt is stored `ok` when it charged something, so `accepted` follows its
-- cumulative and its voucher becomes the best voucher, which the settler claims with the receipt.
ALTER TABLE sessions ADD COLUMN metering BYTEA CHECK (metering IS NULL OR octet_length(metering) = 29);
ALTER TABLE vouchers ADD COLUMN accepted BIGINT CHECK (accepted IS NULL OR accepted >= 0);
