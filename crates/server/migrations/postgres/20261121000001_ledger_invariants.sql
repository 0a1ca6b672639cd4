-- The two per-request writes as database invariants, so each is ONE statement: one round trip to
-- the database and one atomic autocommit (a trigger's writes belong to its statement; an
-- exception undoes the whole statement). The application maps the messages to LedgerError.

-- A voucher row can be inserted only as the session's next seq while no request of the session
-- is in flight (`receipt_count = last_seq`); inserting it moves `last_seq`. The UPDATE row-locks
-- the session and, under READ COMMITTED, re-checks its WHERE against a concurrent writer's
-- committed row: of concurrent inserts of one seq (across replicas too), exactly one succeeds.
CREATE FUNCTION vouchers_next_seq_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET last_seq = NEW.seq
    WHERE address = NEW.session AND last_seq = NEW.seq - 1 AND receipt_count = NEW.seq - 1;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM sessions WHERE address = NEW.session) THEN
            RAISE EXCEPTION 'x402pp:conflict' USING ERRCODE = 'XP409';
        END IF;
        RAISE EXCEPTION 'x402pp:unknown_session' USING ERRCODE = 'XP404';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER vouchers_next_seq_only BEFORE INSERT ON vouchers
    FOR EACH ROW EXECUTE FUNCTION vouchers_next_seq_only();

-- A receipt row can be inserted only for an accepted seq; inserting it moves the receipt chain
-- head forward (never back), and an ok receipt sets `accepted` and the best voucher. A second
-- receipt for one seq fails on the primary key (the head update is undone with it).
CREATE FUNCTION receipts_accepted_seq_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    accepted_seq BIGINT;
BEGIN
    SELECT last_seq INTO accepted_seq FROM sessions WHERE address = NEW.session FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'x402pp:unknown_session' USING ERRCODE = 'XP404';
    END IF;
    IF accepted_seq < NEW.seq THEN
        RAISE EXCEPTION 'x402pp:conflict' USING ERRCODE = 'XP409';
    END IF;
    UPDATE sessions SET
        receipts_head = NEW.hash,
        receipt_count = NEW.seq,
        best_seq = CASE WHEN NEW.ok THEN NEW.seq ELSE best_seq END,
        accepted = CASE WHEN NEW.ok THEN NEW.cumulative_charged ELSE accepted END
    WHERE address = NEW.session AND receipt_count < NEW.seq;
    RETURN NEW;
END
$$;

CREATE TRIGGER receipts_accepted_seq_only BEFORE INSERT ON receipts
    FOR EACH ROW EXECUTE FUNCTION receipts_accepted_seq_only();
