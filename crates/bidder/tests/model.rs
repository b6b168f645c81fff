//! Model-based property test of the bid decision and the lot lifecycle.
//!
//! Random command sequences over one lot are fed both to the real decision functions
//! ([`decide_bid`], [`decide_command`]) and to a small reference model written here again from
//! PROTOCOL.md (increment table, lot states, rejection reasons, the clock). After every step the
//! records, the lot and the settlement must agree with the model, and a few invariants must hold
//! whatever the model says.

use bidder::decide::{decide_bid, decide_command, Lifecycle};
use proptest::prelude::*;
use schemas::frames::BidStatus;
use schemas::nats::PlaceBid;
use schemas::{EventId, LotId, LotState, Outcome, RejectReason, UserId};
use store::bidding::{BidRecord, CommandKind, CommandRecord, LotRecord, Settlement};

// ---------------------------------------------------------------------------------------------
// The reference model, from PROTOCOL.md only.
// ---------------------------------------------------------------------------------------------

/// Dollars to cents, so the increment table reads like the one in PROTOCOL.md.
const fn usd(dollars: i64) -> i64 {
    dollars * 100
}

/// The largest amount the bidder takes. Not in PROTOCOL.md ("an `amount` that is not a positive
/// integer is `invalid`"); it is the implementation's sanity cap (`schemas::Cents::MAX`).
const AMOUNT_CAP: i64 = 100_000_000_000_000;

const MAX_IDEM_CHARS: usize = 64;

/// PROTOCOL.md, "Increments (default table, in cents)".
fn model_increment(high: i64) -> i64 {
    if high < usd(100) {
        usd(1)
    } else if high < usd(500) {
        usd(5)
    } else if high < usd(1_000) {
        usd(10)
    } else if high < usd(5_000) {
        usd(25)
    } else if high < usd(25_000) {
        usd(50)
    } else {
        usd(100)
    }
}

/// A lot as the model sees it.
#[derive(Clone, Debug)]
struct Model {
    id: LotId,
    state: LotState,
    outcome: Option<Outcome>,
    starting_price: i64,
    reserve: i64,
    high: Option<i64>,
    high_bidder: Option<UserId>,
    bid_count: i32,
    version: i64,
    ends_at: Option<i64>,
    remaining_ms: Option<i64>,
    reset_ms: i64,
}

/// What the model expects of one bid.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BidOutcome {
    reason: Option<RejectReason>,
    prev_bidder: Option<UserId>,
    prev_high: Option<i64>,
}

/// A lifecycle command as the test generates it.
#[derive(Clone, Copy, Debug)]
enum Cmd {
    Open { ends_at: i64 },
    Hammer { expected_version: i64 },
    Pause,
    Resume,
    Cancel,
}

impl Cmd {
    fn lifecycle(self) -> Lifecycle {
        match self {
            Cmd::Open { ends_at } => Lifecycle::Open { ends_at },
            Cmd::Hammer { expected_version } => Lifecycle::Hammer { expected_version },
            Cmd::Pause => Lifecycle::Pause,
            Cmd::Resume => Lifecycle::Resume,
            Cmd::Cancel => Lifecycle::Cancel,
        }
    }

    fn kind(self) -> CommandKind {
        match self {
            Cmd::Open { .. } => CommandKind::Open,
            Cmd::Hammer { .. } => CommandKind::Hammer,
            Cmd::Pause => CommandKind::Pause,
            Cmd::Resume => CommandKind::Resume,
            Cmd::Cancel => CommandKind::Cancel,
        }
    }
}

impl Model {
    /// "`min_next` is `starting_price` while a lot has no bid, else `high + increment(high)`."
    fn min_next(&self) -> i64 {
        match self.high {
            None => self.starting_price,
            Some(h) => h + model_increment(h),
        }
    }

    fn ended(&self) -> bool {
        self.state == LotState::Closed || self.state == LotState::Cancelled
    }

    /// One bid. Reasons in the order decide.rs checks them: invalid → not_verified → paused →
    /// closed → already_high → stale → too_low.
    fn bid(
        &mut self,
        user: UserId,
        verified: bool,
        amount: i64,
        seen_high: Option<i64>,
        idem: &str,
        now: i64,
    ) -> BidOutcome {
        let idem_chars = idem.chars().count();
        let reason =
            if idem_chars == 0 || idem_chars > MAX_IDEM_CHARS || amount <= 0 || amount > AMOUNT_CAP
            {
                Some(RejectReason::Invalid)
            } else if !verified {
                Some(RejectReason::NotVerified)
            } else if self.state == LotState::Paused {
                Some(RejectReason::Paused)
            } else if self.state != LotState::Open {
                // hammered, not yet open, or cancelled
                Some(RejectReason::Closed)
            } else if self.high_bidder == Some(user) {
                Some(RejectReason::AlreadyHigh)
            } else if seen_high != self.high {
                Some(RejectReason::Stale)
            } else if amount < self.min_next() {
                Some(RejectReason::TooLow)
            } else {
                None
            };
        let (prev_bidder, prev_high) = (self.high_bidder, self.high);
        if reason.is_some() {
            return BidOutcome {
                reason,
                prev_bidder: None,
                prev_high: None,
            };
        }
        self.high = Some(amount);
        self.high_bidder = Some(user);
        self.bid_count += 1;
        self.version += 1;
        // "the later of `ends_at` and its decision time + `reset_seconds`"
        let reset = now + self.reset_ms;
        self.ends_at = Some(match self.ends_at {
            Some(e) if e > reset => e,
            _ => reset,
        });
        BidOutcome {
            reason: None,
            prev_bidder,
            prev_high,
        }
    }

    /// One lifecycle command: whether it applied, and the sale (winner, amount) when a hammer
    /// sells the lot.
    fn command(&mut self, cmd: Cmd, now: i64) -> (bool, Option<(UserId, i64)>) {
        let mut sale = None;
        let applied = match (cmd, self.state) {
            (Cmd::Open { ends_at }, LotState::Scheduled) => {
                self.state = LotState::Open;
                self.ends_at = Some(ends_at);
                self.remaining_ms = None;
                true
            }
            (Cmd::Hammer { expected_version }, LotState::Open)
                if expected_version == self.version =>
            {
                self.state = LotState::Closed;
                match (self.high, self.high_bidder) {
                    (Some(high), Some(winner)) if high >= self.reserve => {
                        self.outcome = Some(Outcome::Sold);
                        sale = Some((winner, high));
                    }
                    _ => self.outcome = Some(Outcome::Unsold),
                }
                true
            }
            (Cmd::Pause, LotState::Open) => {
                // keeps the deadline as it stood, and the time left on it
                self.state = LotState::Paused;
                let left = match self.ends_at {
                    Some(e) if e > now => e - now,
                    _ => 0,
                };
                self.remaining_ms = Some(left);
                true
            }
            (Cmd::Resume, LotState::Paused) => {
                self.state = LotState::Open;
                self.ends_at = Some(now + self.remaining_ms.unwrap_or(0));
                self.remaining_ms = None;
                true
            }
            (
                Cmd::Cancel,
                LotState::Draft | LotState::Scheduled | LotState::Open | LotState::Paused,
            ) => {
                self.state = LotState::Cancelled;
                self.outcome = Some(Outcome::Cancelled);
                true
            }
            _ => false,
        };
        if applied {
            self.version += 1;
        }
        (applied, sale)
    }

    /// The lot record the model expects the real lot to be equal to.
    fn record(&self, like: &LotRecord) -> LotRecord {
        LotRecord {
            state: self.state,
            outcome: self.outcome,
            high: self.high,
            high_bidder: self.high_bidder,
            bid_count: self.bid_count,
            version: self.version,
            ends_at: self.ends_at,
            remaining_ms: self.remaining_ms,
            ..like.clone()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generated inputs.
// ---------------------------------------------------------------------------------------------

const USERS: usize = 4;
const T0: i64 = 1_700_000_000_000;

/// Where the increment changes, in the test's own words.
const BAND_EDGES: [i64; 5] = [usd(100), usd(500), usd(1_000), usd(5_000), usd(25_000)];

#[derive(Clone, Debug)]
struct Init {
    state: LotState,
    starting_price: i64,
    /// Percent of the starting price.
    reserve_pct: i64,
    /// For open and paused lots: a high above the starting price and its bidder (index
    /// `USERS` is someone outside the pool), with the bids counted so far.
    high: Option<(i64, usize, i32)>,
    version: i64,
    start: i64,
    clock_ms: i64,
    reset_seconds: i32,
}

#[derive(Clone, Copy, Debug)]
enum AmountPick {
    MinNext,
    /// A band edge of the increment table, give or take a cent.
    BandEdge(usize, i64),
    Above(i64),
    WayAbove(i64),
    Below(i64),
    Zero,
    Negative(i64),
    AtCap,
    OverCap,
    Max,
}

#[derive(Clone, Copy, Debug)]
enum SeenPick {
    Current,
    Nothing,
    Off(i64),
}

#[derive(Clone, Copy, Debug)]
enum IdemPick {
    Plain(u32),
    Empty,
    Chars64,
    Chars65,
    Accented64,
    Accented65,
}

#[derive(Clone, Copy, Debug)]
enum VersionPick {
    Current,
    Off(i64),
}

#[derive(Clone, Debug)]
enum Step {
    Bid {
        user: usize,
        amount: AmountPick,
        seen: SeenPick,
        idem: IdemPick,
    },
    BidUnknownLot {
        user: usize,
        amount: i64,
    },
    Open {
        in_ms: i64,
    },
    Hammer(VersionPick),
    Pause,
    Resume,
    Cancel,
    CommandUnknownLot,
}

fn init_strategy() -> impl Strategy<Value = Init> {
    let state = prop_oneof![
        1 => Just(LotState::Draft),
        3 => Just(LotState::Scheduled),
        5 => Just(LotState::Open),
        2 => Just(LotState::Paused),
    ];
    let starting_price = prop_oneof![
        (0..BAND_EDGES.len(), -1..=1i64).prop_map(|(i, d)| BAND_EDGES[i] + d),
        1..=300i64,
        9_800..=10_200i64,
        49_800..=50_200i64,
        99_800..=100_200i64,
        1..=3_000_000i64,
    ];
    let reserve_pct = prop_oneof![Just(0i64), Just(100i64), 50..=400i64];
    let high = prop::option::weighted(0.4, (0..=200_000i64, 0..=USERS, 1..=40i32));
    (
        state,
        starting_price,
        reserve_pct,
        high,
        0..=1_000i64,
        0..=10_000_000i64,
        0..=60_000i64,
        0..=60i32,
    )
        .prop_map(
            |(
                state,
                starting_price,
                reserve_pct,
                high,
                version,
                start,
                clock_ms,
                reset_seconds,
            )| {
                Init {
                    state,
                    starting_price,
                    reserve_pct,
                    high,
                    version,
                    start,
                    clock_ms,
                    reset_seconds,
                }
            },
        )
}

fn amount_strategy() -> impl Strategy<Value = AmountPick> {
    prop_oneof![
        12 => Just(AmountPick::MinNext),
        8 => (1..=20_000i64).prop_map(AmountPick::Above),
        3 => (0..BAND_EDGES.len(), -1..=1i64).prop_map(|(i, d)| AmountPick::BandEdge(i, d)),
        2 => (1..=3_000_000i64).prop_map(AmountPick::WayAbove),
        3 => (1..=1_000i64).prop_map(AmountPick::Below),
        1 => Just(AmountPick::Zero),
        1 => (1..=i64::MAX).prop_map(AmountPick::Negative),
        1 => Just(AmountPick::AtCap),
        1 => Just(AmountPick::OverCap),
        1 => Just(AmountPick::Max),
    ]
}

fn seen_strategy() -> impl Strategy<Value = SeenPick> {
    prop_oneof![
        8 => Just(SeenPick::Current),
        1 => Just(SeenPick::Nothing),
        2 => prop_oneof![-50_000..=-1i64, 1..=50_000i64].prop_map(SeenPick::Off),
    ]
}

fn idem_strategy() -> impl Strategy<Value = IdemPick> {
    prop_oneof![
        50 => any::<u32>().prop_map(IdemPick::Plain),
        1 => Just(IdemPick::Empty),
        1 => Just(IdemPick::Chars64),
        1 => Just(IdemPick::Chars65),
        1 => Just(IdemPick::Accented64),
        1 => Just(IdemPick::Accented65),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        40 => (0..USERS, amount_strategy(), seen_strategy(), idem_strategy())
            .prop_map(|(user, amount, seen, idem)| Step::Bid { user, amount, seen, idem }),
        1 => (0..USERS, -10..=10_000_000i64)
            .prop_map(|(user, amount)| Step::BidUnknownLot { user, amount }),
        3 => (-5_000..=120_000i64).prop_map(|in_ms| Step::Open { in_ms }),
        1 => Just(Step::Hammer(VersionPick::Current)),
        1 => prop_oneof![-3..=-1i64, 1..=3i64].prop_map(|d| Step::Hammer(VersionPick::Off(d))),
        3 => Just(Step::Pause),
        3 => Just(Step::Resume),
        1 => Just(Step::Cancel),
        1 => Just(Step::CommandUnknownLot),
    ]
}

/// How time moves before a step.
#[derive(Clone, Copy, Debug)]
enum Dt {
    By(i64),
    /// To the lot's deadline, give or take a millisecond (never backwards).
    ToDeadline(i64),
    /// To where a bid's reset lands on the deadline, give or take a millisecond.
    ToResetTie(i64),
}

/// Time between steps: mostly short, sometimes long enough to run a clock out, sometimes right
/// at the deadline.
fn dt_strategy() -> impl Strategy<Value = Dt> {
    prop_oneof![
        12 => (0..=5_000i64).prop_map(Dt::By),
        2 => (0..=200_000i64).prop_map(Dt::By),
        1 => (-1..=1i64).prop_map(Dt::ToDeadline),
        1 => (-1..=1i64).prop_map(Dt::ToResetTie),
    ]
}

fn advance(now: i64, dt: Dt, model: &Model) -> i64 {
    match (dt, model.ends_at) {
        (Dt::By(d), _) => now + d,
        (Dt::ToDeadline(d), Some(e)) => now.max(e + d),
        (Dt::ToResetTie(d), Some(e)) => now.max(e - model.reset_ms + d),
        (Dt::ToDeadline(_) | Dt::ToResetTie(_), None) => now,
    }
}

fn resolve_amount(pick: AmountPick, model: &Model) -> i64 {
    let min = model.min_next();
    match pick {
        AmountPick::MinNext => min,
        AmountPick::BandEdge(i, d) => BAND_EDGES[i] + d,
        AmountPick::Above(d) | AmountPick::WayAbove(d) => min.saturating_add(d),
        AmountPick::Below(d) => min - d,
        AmountPick::Zero => 0,
        AmountPick::Negative(n) => -n,
        AmountPick::AtCap => AMOUNT_CAP,
        AmountPick::OverCap => AMOUNT_CAP + 1,
        AmountPick::Max => i64::MAX,
    }
}

fn resolve_seen(pick: SeenPick, model: &Model) -> Option<i64> {
    match pick {
        SeenPick::Current => model.high,
        SeenPick::Nothing => None,
        SeenPick::Off(d) => Some(model.high.unwrap_or(model.starting_price) + d),
    }
}

fn resolve_idem(pick: IdemPick) -> String {
    match pick {
        IdemPick::Plain(n) => format!("k{n}"),
        IdemPick::Empty => String::new(),
        IdemPick::Chars64 => "x".repeat(64),
        IdemPick::Chars65 => "x".repeat(65),
        IdemPick::Accented64 => "é".repeat(64),
        IdemPick::Accented65 => "é".repeat(65),
    }
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

/// Whether two lots differ in anything but their version.
fn changed(before: &LotRecord, after: &LotRecord) -> bool {
    let mut a = after.clone();
    a.version = before.version;
    a != *before
}

fn allowed_transition(from: LotState, to: LotState) -> bool {
    use LotState::*;
    from == to
        || matches!(
            (from, to),
            (Draft, Scheduled)
                | (Scheduled, Open)
                | (Open, Paused)
                | (Paused, Open)
                | (Open, Closed)
                | (Draft | Scheduled | Open | Paused, Cancelled)
        )
}

fn run(init: Init, verified: Vec<bool>, steps: Vec<(Dt, Step)>) -> Result<(), TestCaseError> {
    let users: Vec<UserId> = (0..=USERS).map(|_| UserId::new()).collect();
    let lot_id = LotId::new();
    let now0 = T0 + init.start;
    let (ends_at, remaining_ms) = match init.state {
        LotState::Open => (Some(now0 + init.clock_ms), None),
        LotState::Paused => (Some(now0 - 1_000), Some(init.clock_ms)),
        _ => (None, None),
    };
    let (high, high_bidder, bid_count) = match (init.state, init.high) {
        (LotState::Open | LotState::Paused, Some((above, who, count))) => {
            (Some(init.starting_price + above), Some(users[who]), count)
        }
        _ => (None, None, 0),
    };
    let mut lot = LotRecord {
        id: lot_id,
        event_id: EventId::new(),
        lane: 2,
        position: 7,
        state: init.state,
        outcome: None,
        starting_price: init.starting_price,
        reserve: init.starting_price * init.reserve_pct / 100,
        high,
        high_bidder,
        bid_count,
        version: init.version,
        ends_at,
        remaining_ms,
        applied_seq: 41,
        reset_seconds: init.reset_seconds,
        pickup: "Dock 4".into(),
    };
    let mut model = Model {
        id: lot_id,
        state: lot.state,
        outcome: lot.outcome,
        starting_price: lot.starting_price,
        reserve: lot.reserve,
        high: lot.high,
        high_bidder: lot.high_bidder,
        bid_count: lot.bid_count,
        version: lot.version,
        ends_at: lot.ends_at,
        remaining_ms: lot.remaining_ms,
        reset_ms: i64::from(init.reset_seconds) * 1000,
    };

    let mut now = now0;
    let mut last_accepted = lot.high;
    for (i, (dt, step)) in steps.into_iter().enumerate() {
        now = advance(now, dt, &model);
        let seq = 100 + i as i64;
        let trace = (i % 3 == 0).then(|| format!("00-{:032x}-{:016x}-01", i + 1, i + 1));
        let before = lot.clone();
        let ctx = format!("step {i} {step:?} at {now}, lot before {before:?}");

        match step {
            Step::Bid {
                user,
                amount,
                seen,
                idem,
            } => {
                let amount = resolve_amount(amount, &model);
                let seen_high = resolve_seen(seen, &model);
                let idem = resolve_idem(idem);
                let bid = PlaceBid {
                    lot_id,
                    user_id: users[user],
                    amount,
                    seen_high,
                    idem: idem.clone(),
                    sent_at: now - 3,
                };
                let got = decide_bid(
                    Some(&mut lot),
                    &bid,
                    verified[user],
                    now,
                    seq,
                    trace.clone(),
                );
                let out = model.bid(users[user], verified[user], amount, seen_high, &idem, now);
                // An idem the contract refuses is recorded under the message's sequence.
                let recorded = if (1..=MAX_IDEM_CHARS).contains(&idem.chars().count()) {
                    idem
                } else {
                    format!("invalid-idem-{seq}")
                };
                let want = BidRecord {
                    lot_id,
                    user_id: users[user],
                    idem: recorded,
                    amount,
                    seen_high,
                    status: if out.reason.is_none() {
                        BidStatus::Accepted
                    } else {
                        BidStatus::Rejected
                    },
                    reason: out.reason,
                    high: model.high,
                    min_next: Some(model.min_next()),
                    version: Some(model.version),
                    bid_count: Some(model.bid_count),
                    ends_at: model.ends_at,
                    prev_bidder: out.prev_bidder,
                    prev_high: out.prev_high,
                    stream_seq: seq,
                    decided_at: now,
                    traceparent: trace,
                };
                prop_assert_eq!(&got, &want, "{}", ctx);

                // Invariants, from the real record alone.
                if got.status == BidStatus::Accepted {
                    prop_assert!(got.reason.is_none());
                    prop_assert!(
                        last_accepted.is_none_or(|h| got.amount > h),
                        "accepted amounts strictly increase: {}",
                        ctx
                    );
                    last_accepted = Some(got.amount);
                    prop_assert_eq!(lot.high, Some(got.amount));
                    prop_assert_eq!(lot.high_bidder, Some(users[user]));
                    prop_assert_eq!(lot.bid_count, before.bid_count + 1);
                    prop_assert_eq!(got.prev_high, before.high);
                    prop_assert_eq!(got.prev_bidder, before.high_bidder);
                    prop_assert!(before.high_bidder != Some(users[user]));
                    prop_assert!(
                        lot.ends_at.is_some() && lot.ends_at >= before.ends_at,
                        "a bid never shortens the clock: {}",
                        ctx
                    );
                    prop_assert!(
                        lot.ends_at >= Some(now + i64::from(lot.reset_seconds) * 1000),
                        "a bid puts at least reset_seconds on the clock: {}",
                        ctx
                    );
                    prop_assert_eq!(before.state, LotState::Open);
                } else {
                    prop_assert!(got.reason.is_some());
                    prop_assert_eq!(&lot, &before, "a rejected bid changes nothing: {}", ctx);
                    prop_assert_eq!((got.prev_bidder, got.prev_high), (None, None));
                }
                prop_assert_eq!(got.version, Some(lot.version));
                prop_assert_eq!(got.high, lot.high);
            }
            Step::BidUnknownLot { user, amount } => {
                let other = LotId::new();
                let bid = PlaceBid {
                    lot_id: other,
                    user_id: users[user],
                    amount,
                    seen_high: None,
                    idem: "nowhere".into(),
                    sent_at: now,
                };
                let got = decide_bid(None, &bid, verified[user], now, seq, trace.clone());
                let want = BidRecord {
                    lot_id: other,
                    user_id: users[user],
                    idem: "nowhere".into(),
                    amount,
                    seen_high: None,
                    status: BidStatus::Rejected,
                    reason: Some(RejectReason::NotFound),
                    high: None,
                    min_next: None,
                    version: None,
                    bid_count: None,
                    ends_at: None,
                    prev_bidder: None,
                    prev_high: None,
                    stream_seq: seq,
                    decided_at: now,
                    traceparent: trace,
                };
                prop_assert_eq!(&got, &want, "{}", ctx);
            }
            Step::CommandUnknownLot => {
                let other = LotId::new();
                let (got, settlement) =
                    decide_command(other, None, Lifecycle::Cancel, now, seq, trace.clone());
                let want = CommandRecord {
                    stream_seq: seq,
                    lot_id: other,
                    kind: CommandKind::Cancel,
                    applied: false,
                    state: None,
                    outcome: None,
                    high: None,
                    high_bidder: None,
                    min_next: None,
                    version: None,
                    ends_at: None,
                    remaining_ms: None,
                    decided_at: now,
                    traceparent: trace,
                };
                prop_assert_eq!(&got, &want, "{}", ctx);
                prop_assert!(settlement.is_none());
            }
            Step::Open { .. } | Step::Hammer(_) | Step::Pause | Step::Resume | Step::Cancel => {
                let cmd = match step {
                    Step::Open { in_ms } => Cmd::Open {
                        ends_at: now + in_ms,
                    },
                    Step::Hammer(VersionPick::Current) => Cmd::Hammer {
                        expected_version: model.version,
                    },
                    Step::Hammer(VersionPick::Off(d)) => Cmd::Hammer {
                        expected_version: model.version + d,
                    },
                    Step::Pause => Cmd::Pause,
                    Step::Resume => Cmd::Resume,
                    _ => Cmd::Cancel,
                };
                let (got, settlement) = decide_command(
                    lot_id,
                    Some(&mut lot),
                    cmd.lifecycle(),
                    now,
                    seq,
                    trace.clone(),
                );
                let (applied, sale) = model.command(cmd, now);
                let want = CommandRecord {
                    stream_seq: seq,
                    lot_id,
                    kind: cmd.kind(),
                    applied,
                    state: Some(model.state),
                    outcome: model.outcome,
                    high: model.high,
                    high_bidder: model.high_bidder,
                    min_next: Some(model.min_next()),
                    version: Some(model.version),
                    ends_at: model.ends_at,
                    remaining_ms: model.remaining_ms,
                    decided_at: now,
                    traceparent: trace,
                };
                prop_assert_eq!(&got, &want, "{}", ctx);
                let want_settlement = sale.map(|(user_id, amount)| Settlement {
                    lot_id: model.id,
                    user_id,
                    amount,
                    decided_at: now,
                });
                prop_assert_eq!(&settlement, &want_settlement, "{}", ctx);

                // Invariants, from the real record alone.
                let sold_now = got.applied
                    && matches!(cmd, Cmd::Hammer { .. })
                    && lot.state == LotState::Closed
                    && lot.high.is_some_and(|h| h >= lot.reserve);
                prop_assert_eq!(settlement.is_some(), sold_now, "{}", ctx);
                if let Some(s) = &settlement {
                    prop_assert_eq!(lot.outcome, Some(Outcome::Sold));
                    prop_assert_eq!(Some(s.amount), lot.high);
                    prop_assert_eq!(Some(s.user_id), lot.high_bidder);
                    prop_assert_eq!(s.lot_id, lot_id);
                }
                if got.applied && lot.state == LotState::Closed {
                    prop_assert_eq!(
                        lot.outcome,
                        Some(if settlement.is_some() {
                            Outcome::Sold
                        } else {
                            Outcome::Unsold
                        })
                    );
                }
                if !got.applied {
                    prop_assert_eq!(&lot, &before, "a refused command changes nothing: {}", ctx);
                }
                prop_assert_eq!(got.version, Some(lot.version));
                prop_assert_eq!(
                    (lot.high, lot.high_bidder, lot.bid_count),
                    (before.high, before.high_bidder, before.bid_count),
                    "commands never touch the bids"
                );
            }
        }

        // Invariants on every step.
        prop_assert_eq!(&lot, &model.record(&before), "lot vs model: {}", ctx);
        if changed(&before, &lot) {
            prop_assert_eq!(
                lot.version,
                before.version + 1,
                "one change, one version: {}",
                ctx
            );
        } else {
            prop_assert_eq!(
                lot.version,
                before.version,
                "no change, same version: {}",
                ctx
            );
        }
        if model.ended() {
            prop_assert!(lot.state.is_final(), "{}", ctx);
        }
        if before.state == LotState::Closed || before.state == LotState::Cancelled {
            prop_assert_eq!(&lot, &before, "an ended lot never changes: {}", ctx);
        }
        prop_assert!(
            allowed_transition(before.state, lot.state),
            "{} -> {}: {}",
            before.state,
            lot.state,
            ctx
        );
        prop_assert_eq!(lot.outcome.is_some(), lot.state.is_final());
        match lot.state {
            LotState::Paused => prop_assert!(lot.remaining_ms.is_some(), "{}", ctx),
            // a lot cancelled while paused keeps the time it had
            LotState::Cancelled => {}
            _ => prop_assert!(lot.remaining_ms.is_none(), "{}", ctx),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_follow_the_reference_model(
        init in init_strategy(),
        verified in prop::collection::vec(prop::bool::weighted(0.8), USERS),
        steps in prop::collection::vec((dt_strategy(), step_strategy()), 0..=60),
    ) {
        run(init, verified, steps)?;
    }
}
