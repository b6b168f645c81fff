-- Every decision is one row of `bids`, written at the bidder's full rate, so each index on it is
-- paid for on every bid. The stream sequence already identifies a decision (unique, and what a
-- replay looks it up by): it becomes the primary key, and the surrogate `id` goes with its
-- sequence and index. Lots list only their accepted bids, so the per-lot index covers only
-- those; a refused bid now updates two indexes (stream sequence, user + idempotency key)
-- instead of four.
DROP INDEX bids_lot_idx;
ALTER TABLE bids DROP CONSTRAINT bids_pkey;
ALTER TABLE bids DROP COLUMN id;
ALTER TABLE bids ADD CONSTRAINT bids_pkey PRIMARY KEY USING INDEX bids_stream_seq_key;
CREATE INDEX bids_lot_accepted_idx ON bids (lot_id, stream_seq) WHERE status = 'accepted';
