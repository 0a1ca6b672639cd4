-- The two per-request writes as database invariants, so each is ONE statement: one round trip to
-- the database and one atomic autocommit (a trigger's writes belong to its statement; a RAISE
-- undoes the whole statement). The application maps the messages to LedgerError.

-- A voucher row can be inserted only as the session's next seq while no request of the session
-- is in flight (`receipt_count = last_seq`); inserting it moves `last_seq`. This is the voucher
-- compare-and-set: of concurrent inserts of one seq, exactly one succeeds.
CREATE TRIGGER vouchers_next_seq_only BEFORE INSERT ON vouchers
BEGIN
    SELECT RAISE(ABORT, 'x402pp:unknown_session')
    WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE address = NEW.session);
    SELECT RAISE(ABORT, 'x402pp:conflict')
    WHERE NOT EXISTS (
        SELECT 1 FROM sessions
        WHERE address = NEW.session AND last_seq = NEW.seq - 1 AND receipt_count = NEW.seq - 1
    );
    UPDATE sessions SET last_seq = NEW.seq WHERE address = NEW.session;
END;

-- A receipt row can be inserted only for an accepted seq; inserting it moves the receipt chain
-- head forward (never back), and an ok receipt sets `accepted` and the best voucher. A second
-- receipt for one seq fails on the primary key (the head update is undone with it).
CREATE TRIGGER receipts_accepted_seq_only BEFORE INSERT ON receipts
BEGIN
    SELECT RAISE(ABORT, 'x402pp:unknown_session')
    WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE address = NEW.session);
    SELECT RAISE(ABORT, 'x402pp:conflict')
    WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE address = NEW.session AND last_seq >= NEW.seq);
    UPDATE sessions SET
        receipts_head = NEW.hash,
        receipt_count = NEW.seq,
        best_seq = CASE WHEN NEW.ok THEN NEW.seq ELSE best_seq END,
        accepted = CASE WHEN NEW.ok THEN NEW.cumulative_charged ELSE accepted END
    WHERE address = NEW.session AND receipt_count < NEW.seq;
END;
