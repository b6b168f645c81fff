-- Gavel's relational schema. Postgres is the truth; the bidder's in-stream ordering is the
-- concurrency control and these constraints are the second line of defence.
-- Times on the wire are ms since the epoch, so domain times (starts_at, ends_at, decided_at) are
-- bigint ms here too; created_at columns are timestamptz for humans.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,                -- argon2id PHC string
    name          text NOT NULL,
    role          text NOT NULL DEFAULT 'buyer' CHECK (role IN ('buyer', 'admin')),
    verified      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_shape CHECK (email = lower(email) AND email LIKE '%_@_%')
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE vendors (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (name <> ''),
    contact    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    id         uuid PRIMARY KEY,
    vendor_id  uuid NOT NULL REFERENCES vendors (id),
    vin        text NOT NULL CHECK (length(vin) BETWEEN 1 AND 17),
    year       integer NOT NULL CHECK (year BETWEEN 1886 AND 2100),
    make       text NOT NULL,
    model      text NOT NULL,
    trim       text NOT NULL DEFAULT '',
    mileage    integer NOT NULL CHECK (mileage >= 0),
    photos     text[] NOT NULL DEFAULT '{}',
    pickup     text NOT NULL DEFAULT '',        -- pickup instructions for the winner
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX vehicles_vin_key ON vehicles (vin);

CREATE TABLE events (
    id            uuid PRIMARY KEY,
    name          text NOT NULL CHECK (name <> ''),
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'scheduled', 'live', 'closed')),
    starts_at     bigint NOT NULL,
    lanes         integer NOT NULL CHECK (lanes BETWEEN 1 AND 64),
    lot_seconds   integer NOT NULL DEFAULT 30 CHECK (lot_seconds BETWEEN 1 AND 3600),
    reset_seconds integer NOT NULL DEFAULT 30 CHECK (reset_seconds BETWEEN 1 AND 3600),
    started_at    bigint,
    closed_at     bigint,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_status_idx ON events (status, starts_at);

-- One row per lane of an event: which lot is on the block and whether the lane is done.
CREATE TABLE lanes (
    event_id    uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    lane        integer NOT NULL CHECK (lane >= 1),
    current_lot uuid,
    done        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (event_id, lane)
);

CREATE TABLE lots (
    id             uuid PRIMARY KEY,
    event_id       uuid NOT NULL REFERENCES events (id),
    vehicle_id     uuid NOT NULL REFERENCES vehicles (id),
    lane           integer NOT NULL CHECK (lane >= 1),
    position       integer NOT NULL CHECK (position >= 1),
    state          text NOT NULL DEFAULT 'draft'
                   CHECK (state IN ('draft', 'scheduled', 'open', 'paused', 'closed', 'cancelled')),
    outcome        text CHECK (outcome IN ('sold', 'unsold', 'cancelled')),
    starting_price bigint NOT NULL CHECK (starting_price > 0),
    reserve        bigint NOT NULL DEFAULT 0 CHECK (reserve >= 0),
    high           bigint CHECK (high > 0),
    high_bidder    uuid REFERENCES users (id),
    bid_count      integer NOT NULL DEFAULT 0 CHECK (bid_count >= 0),
    version        bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    ends_at        bigint,                      -- deadline while open (and as it stood at a pause)
    remaining_ms   bigint CHECK (remaining_ms >= 0), -- time kept while paused
    applied_seq    bigint NOT NULL DEFAULT 0,   -- last BIDS sequence applied to this lot
    relisted_from  uuid REFERENCES lots (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lots_slot_key UNIQUE (event_id, lane, position),
    CONSTRAINT lots_high_has_bidder CHECK ((high IS NULL) = (high_bidder IS NULL)),
    CONSTRAINT lots_outcome_when_ended CHECK (
        (state = 'closed' AND outcome IN ('sold', 'unsold'))
        OR (state = 'cancelled' AND outcome = 'cancelled')
        OR (state NOT IN ('closed', 'cancelled') AND outcome IS NULL))
);
CREATE INDEX lots_event_idx ON lots (event_id, lane, position);
CREATE INDEX lots_outcome_idx ON lots (outcome) WHERE outcome IS NOT NULL;

-- The lifecycle table of schemas::LotState::can_become, and "amounts only rise", enforced here
-- too so that no code path (or hand-written SQL) can reopen a closed lot or lower a high bid.
CREATE FUNCTION lots_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> OLD.state AND NOT (
        (OLD.state, NEW.state) IN (('draft', 'scheduled'), ('scheduled', 'draft'),
                                   ('scheduled', 'open'), ('open', 'paused'), ('paused', 'open'),
                                   ('open', 'closed'))
        OR (NEW.state = 'cancelled' AND OLD.state IN ('draft', 'scheduled', 'open', 'paused'))
    ) THEN
        RAISE EXCEPTION 'illegal lot transition % -> %', OLD.state, NEW.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'lots_legal_transition';
    END IF;
    IF OLD.state IN ('closed', 'cancelled') AND (NEW.high IS DISTINCT FROM OLD.high
            OR NEW.outcome IS DISTINCT FROM OLD.outcome) THEN
        RAISE EXCEPTION 'lot % has ended', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'lots_ended_frozen';
    END IF;
    IF OLD.high IS NOT NULL AND (NEW.high IS NULL OR NEW.high <= OLD.high)
            AND NEW.high IS DISTINCT FROM OLD.high THEN
        RAISE EXCEPTION 'high bid of lot % may only rise (% -> %)', OLD.id, OLD.high, NEW.high
            USING ERRCODE = 'check_violation', CONSTRAINT = 'lots_high_rises';
    END IF;
    IF NEW.version < OLD.version THEN
        RAISE EXCEPTION 'version of lot % may only rise', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'lots_version_rises';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER lots_guard BEFORE UPDATE ON lots FOR EACH ROW EXECUTE FUNCTION lots_guard();

-- Every bid decision, accepted and rejected (fraud and dispute review). No foreign key on lot_id:
-- a bid on an unknown lot is recorded too (not_found). One decision per client key and per
-- stream message.
CREATE TABLE bids (
    id              bigserial PRIMARY KEY,
    lot_id          uuid NOT NULL,
    user_id         uuid NOT NULL,
    idem            text NOT NULL CHECK (length(idem) BETWEEN 1 AND 64),
    amount          bigint NOT NULL,
    seen_high       bigint,
    status          text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason          text CHECK (reason IN ('stale', 'too_low', 'already_high', 'closed', 'paused',
                                           'not_verified', 'not_found', 'rate_limited', 'invalid')),
    -- the lot as the decision left it: the answer and announcements are rebuilt from these
    high            bigint,
    min_next        bigint,
    version         bigint,
    bid_count       integer,
    ends_at         bigint,
    prev_bidder     uuid,                       -- outbid by an accepted bid
    prev_high       bigint,
    stream_seq      bigint NOT NULL,
    decided_at      bigint NOT NULL,
    traceparent     text,
    CONSTRAINT bids_reason_iff_rejected CHECK ((status = 'rejected') = (reason IS NOT NULL)),
    CONSTRAINT bids_accepted_positive CHECK (status = 'rejected' OR amount > 0)
);
CREATE UNIQUE INDEX bids_user_idem_key ON bids (user_id, idem);
CREATE UNIQUE INDEX bids_stream_seq_key ON bids (stream_seq);
-- no amount accepted twice on a lot
CREATE UNIQUE INDEX bids_lot_accepted_amount_key ON bids (lot_id, amount) WHERE status = 'accepted';
CREATE INDEX bids_lot_idx ON bids (lot_id, id);

-- Outcomes of lifecycle commands (open, hammer, pause, resume, cancel), so a replayed message
-- re-announces what was decided instead of deciding again.
CREATE TABLE lot_commands (
    stream_seq   bigint PRIMARY KEY,
    lot_id       uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('open', 'hammer', 'pause', 'resume', 'cancel')),
    applied      boolean NOT NULL,              -- false: refused or stale (nothing announced)
    state        text,
    outcome      text,
    high         bigint,
    high_bidder  uuid,
    min_next     bigint,
    version      bigint,
    ends_at      bigint,
    remaining_ms bigint,
    decided_at   bigint NOT NULL,
    traceparent  text
);
CREATE INDEX lot_commands_lot_idx ON lot_commands (lot_id);

-- Written in the same transaction as the close of a sold lot.
CREATE TABLE settlements (
    lot_id     uuid PRIMARY KEY REFERENCES lots (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    amount     bigint NOT NULL CHECK (amount > 0),
    decided_at bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settlements_user_idx ON settlements (user_id);

-- The push cohort of an event.
CREATE TABLE event_registrations (
    event_id   uuid NOT NULL REFERENCES events (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id)
);

-- One owner per BIDS partition. Every batch transaction of the bidder updates its row WHERE
-- epoch = its epoch: an owner whose lease was taken over (epoch bumped) cannot commit.
CREATE TABLE partition_leases (
    partition     integer PRIMARY KEY CHECK (partition >= 0),
    owner         text,
    epoch         bigint NOT NULL DEFAULT 0,
    expires_at    timestamptz NOT NULL DEFAULT '-infinity',
    applied_seq   bigint NOT NULL DEFAULT 0,    -- decisions committed up to here
    announced_seq bigint NOT NULL DEFAULT 0,    -- announcements confirmed up to here
    CONSTRAINT partition_leases_announced_le_applied CHECK (announced_seq <= applied_seq)
);
