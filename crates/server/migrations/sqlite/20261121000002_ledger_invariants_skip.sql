-- The two invariant triggers skip a refused row (RAISE(IGNORE)) instead of failing the statement,
-- so one multi-row INSERT ... RETURNING can carry many requests' writes (group commit): the rows
-- returned are the ones accepted; a skipped row is a conflict or an unknown session, which the
-- application tells apart with a read. The rules are those of 20261121000001.

DROP TRIGGER vouchers_next_seq_only;
DROP TRIGGER receipts_accepted_seq_only;

CREATE TRIGGER vouchers_next_seq_only BEFORE INSERT ON vouchers
BEGIN
    SELECT RAISE(IGNORE)
    WHERE NOT EXISTS (
        SELECT 1 FROM sessions
        WHERE address = NEW.session AND last_seq = NEW.seq - 1 AND receipt_count = NEW.seq - 1
    );
    UPDATE sessions SET last_seq = NEW.seq WHERE address = NEW.session;
END;

CREATE TRIGGER receipts_accepted_seq_only BEFORE INSERT ON receipts
BEGIN
    SELECT RAISE(IGNORE)
    WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE address = NEW.session AND last_seq >= NEW.seq);
    UPDATE sessions SET
        receipts_head = NEW.hash,
        receipt_count = NEW.seq,
        best_seq = CASE WHEN NEW.ok THEN NEW.seq ELSE best_seq END,
        accepted = CASE WHEN NEW.ok THEN NEW.cumulative_charged ELSE accepted END
    WHERE address = NEW.session AND receipt_count < NEW.seq;
END;
