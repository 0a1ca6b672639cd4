-- The two invariant triggers skip a refused row (a BEFORE ROW trigger returning NULL) instead of
-- failing the statement, so one multi-row INSERT ... RETURNING can carry many requests' writes
-- (group commit): the rows returned are the ones accepted; a skipped row is a conflict or an
-- unknown session, which the application tells apart with a read. The rules are those of
-- 20261121000001.

CREATE OR REPLACE FUNCTION vouchers_next_seq_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET last_seq = NEW.seq
    WHERE address = NEW.session AND last_seq = NEW.seq - 1 AND receipt_count = NEW.seq - 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION receipts_accepted_seq_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    accepted_seq BIGINT;
BEGIN
    SELECT last_seq INTO accepted_seq FROM sessions WHERE address = NEW.session FOR UPDATE;
    IF NOT FOUND OR accepted_seq < NEW.seq THEN
        RETURN NULL;
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
