//! The audit against a real Postgres: a history written the way the bidder writes it is clean,
//! and each kind of corruption (written behind the constraints' back) is reported.

use schemas::frames::BidStatus;
use schemas::{LotId, LotState, Outcome, RejectReason, UserId};
use store::audit::{self, Rule, Violation};
use store::bidding::{self as db, Batch, BidRecord, CommandKind, CommandRecord, LotRecord};
use store::catalog::{self, NewEvent, NewLot, NewVehicle};
use testkit::TestDb;

struct Sale {
    db: TestDb,
    /// Opened, three accepted bids and a refused one, hammered sold with its settlement.
    sold: LotId,
    /// Opened, one accepted bid, still open.
    open: LotId,
    ann: UserId,
    bob: UserId,
}

fn bid(lot: LotId, user: UserId, idem: &str, amount: i64, seq: i64, count: i32) -> BidRecord {
    BidRecord {
        lot_id: lot,
        user_id: user,
        idem: idem.into(),
        amount,
        seen_high: None,
        status: BidStatus::Accepted,
        reason: None,
        high: Some(amount),
        min_next: Some(amount + 100),
        version: Some(seq),
        bid_count: Some(count),
        ends_at: Some(1),
        prev_bidder: None,
        prev_high: None,
        stream_seq: seq,
        decided_at: seq,
        traceparent: None,
    }
}

fn command(lot: LotId, kind: CommandKind, seq: i64, state: LotState) -> CommandRecord {
    CommandRecord {
        stream_seq: seq,
        lot_id: lot,
        kind,
        applied: true,
        state: Some(state),
        outcome: None,
        high: None,
        high_bidder: None,
        min_next: None,
        version: Some(seq),
        ends_at: Some(1),
        remaining_ms: None,
        decided_at: seq,
        traceparent: None,
    }
}

async fn sale() -> Sale {
    let db = TestDb::new().await.unwrap();
    store::migrate(&db.pool).await.unwrap();
    let pool = &db.pool;
    let hash = store::users::hash_password("password1").unwrap();
    let ann = store::users::create_user(pool, "ann@x.test", &hash, "Ann", false, true)
        .await
        .unwrap();
    let bob = store::users::create_user(pool, "bob@x.test", &hash, "Bob", false, true)
        .await
        .unwrap();
    let (ann, bob) = (UserId(ann.id), UserId(bob.id));
    let vendor = catalog::create_vendor(pool, "V", "v@x.test").await.unwrap();
    let event = catalog::create_event(
        pool,
        &NewEvent {
            name: "E".into(),
            starts_at: 0,
            lanes: 2,
            lot_seconds: 30,
            reset_seconds: 30,
        },
    )
    .await
    .unwrap();
    let mut lots = Vec::new();
    for lane in 1..=2 {
        let vehicle = catalog::create_vehicle(
            pool,
            &NewVehicle {
                vendor_id: vendor,
                vin: format!("VIN{lane}"),
                year: 2020,
                make: "M".into(),
                model: "X".into(),
                trim: String::new(),
                mileage: 1,
                photos: vec![],
                pickup: String::new(),
            },
        )
        .await
        .unwrap();
        let lot = catalog::add_lot(
            pool,
            &NewLot {
                event_id: event,
                vehicle_id: vehicle,
                lane,
                position: 1,
                starting_price: 1_000,
                reserve: 0,
            },
        )
        .await
        .unwrap();
        lots.push(lot);
    }
    catalog::schedule_event(pool, event).await.unwrap();
    let (sold, open) = (lots[0], lots[1]);
    let lease = db::acquire_lease(pool, 0, "audit", 60_000)
        .await
        .unwrap()
        .unwrap();
    let mut records = db::load_lots(pool, &[sold, open]).await.unwrap();
    records.sort_by_key(|l| l.lane);
    let lot = |base: &LotRecord, state, high: Option<(i64, UserId)>, count, seq| LotRecord {
        state,
        high: high.map(|h| h.0),
        high_bidder: high.map(|h| h.1),
        bid_count: count,
        version: seq,
        applied_seq: seq,
        ..base.clone()
    };
    let mut refused = bid(sold, ann, "a-late", 1_100, 6, 3);
    refused.status = BidStatus::Rejected;
    refused.reason = Some(RejectReason::Stale);
    let opened = Batch {
        applied_seq: 6,
        announced_seq: 6,
        bids: vec![
            bid(sold, ann, "a1", 1_000, 3, 1),
            bid(sold, bob, "b1", 1_100, 4, 2),
            bid(sold, ann, "a2", 1_200, 5, 3),
            refused,
        ],
        commands: vec![
            command(sold, CommandKind::Open, 1, LotState::Open),
            command(open, CommandKind::Open, 2, LotState::Open),
        ],
        lots: vec![
            lot(&records[0], LotState::Open, Some((1_200, ann)), 3, 6),
            lot(&records[1], LotState::Open, None, 0, 2),
        ],
        settlements: vec![],
    };
    db::commit_batch(pool, &lease, 60_000, &opened)
        .await
        .unwrap();
    let hammered = Batch {
        applied_seq: 8,
        announced_seq: 8,
        bids: vec![bid(open, bob, "b2", 1_000, 8, 1)],
        commands: vec![CommandRecord {
            outcome: Some(Outcome::Sold),
            high: Some(1_200),
            high_bidder: Some(ann),
            ..command(sold, CommandKind::Hammer, 7, LotState::Closed)
        }],
        lots: vec![
            LotRecord {
                outcome: Some(Outcome::Sold),
                ..lot(&records[0], LotState::Closed, Some((1_200, ann)), 3, 7)
            },
            lot(&records[1], LotState::Open, Some((1_000, bob)), 1, 8),
        ],
        settlements: vec![db::Settlement {
            lot_id: sold,
            user_id: ann,
            amount: 1_200,
            decided_at: 7,
        }],
    };
    db::commit_batch(pool, &lease, 60_000, &hammered)
        .await
        .unwrap();
    Sale {
        db,
        sold,
        open,
        ann,
        bob,
    }
}

async fn exec(s: &Sale, sql: &str) {
    sqlx::query(sql).execute(&s.db.pool).await.unwrap();
}

async fn audit_all(s: &Sale) -> Vec<Violation> {
    audit::check(&s.db.pool, None).await.unwrap()
}

fn rules(found: &[Violation]) -> Vec<(Rule, Option<LotId>)> {
    found.iter().map(|v| (v.rule, v.lot)).collect()
}

#[tokio::test]
async fn a_history_written_like_the_bidder_writes_it_is_clean() {
    let s = sale().await;
    assert_eq!(audit_all(&s).await, vec![]);
    assert_eq!(
        audit::check(&s.db.pool, Some(&[s.sold])).await.unwrap(),
        vec![]
    );
    assert_eq!(audit::check(&s.db.pool, Some(&[])).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_falling_accepted_amount_is_reported_and_only_for_the_lots_asked_about() {
    let s = sale().await;
    // Accepted 1,050 on the open lot after its 1,000 ... and also after a 1,100 inserted before it.
    exec(
        &s,
        &format!(
            "INSERT INTO bids (lot_id, user_id, idem, amount, status, stream_seq, decided_at)
             VALUES ('{lot}', '{ann}', 'x1', 1100, 'accepted', 9, 9),
                    ('{lot}', '{bob}', 'x2', 1050, 'accepted', 10, 10)",
            lot = s.open,
            ann = s.ann,
            bob = s.bob
        ),
    )
    .await;
    let found = audit_all(&s).await;
    let r = rules(&found);
    assert!(
        r.contains(&(Rule::AmountsNotRising, Some(s.open))),
        "{found:#?}"
    );
    // The lot row still says 1,000 by Bob after one bid: that disagrees too.
    assert!(r.contains(&(Rule::LotState, Some(s.open))), "{found:#?}");
    assert!(
        found.iter().any(|v| v
            .detail
            .contains("accepted 1050 at seq 10 after 1100 at seq 9")),
        "{found:#?}"
    );
    assert_eq!(
        audit::check(&s.db.pool, Some(&[s.sold])).await.unwrap(),
        vec![],
        "the sold lot is untouched"
    );
}

#[tokio::test]
async fn a_first_bid_below_the_starting_price_is_reported() {
    let s = sale().await;
    exec(
        &s,
        &format!(
            "UPDATE lots SET starting_price = 1050 WHERE id = '{}'",
            s.open
        ),
    )
    .await;
    let found = audit_all(&s).await;
    assert_eq!(rules(&found), vec![(Rule::AmountsNotRising, Some(s.open))]);
}

#[tokio::test]
async fn a_bid_decided_twice_is_reported() {
    let s = sale().await;
    // The unique index is the first line of defence; the audit is the second.
    exec(&s, "DROP INDEX bids_user_idem_key").await;
    exec(
        &s,
        &format!(
            "INSERT INTO bids (lot_id, user_id, idem, amount, status, reason, stream_seq, decided_at)
             VALUES ('{}', '{}', 'a2', 1300, 'rejected', 'closed', 11, 11)",
            s.sold, s.ann
        ),
    )
    .await;
    let found = audit_all(&s).await;
    assert_eq!(
        rules(&found),
        vec![(Rule::DecidedTwice, Some(s.sold))],
        "{found:#?}"
    );
    assert!(found[0]
        .detail
        .contains("idem a2 decided 2 times (seqs 5,11"));
}

#[tokio::test]
async fn a_stream_message_decided_as_a_bid_and_as_a_command_is_reported() {
    let s = sale().await;
    exec(
        &s,
        &format!(
            "INSERT INTO lot_commands (stream_seq, lot_id, kind, applied, decided_at)
             VALUES (8, '{}', 'pause', false, 8)",
            s.open
        ),
    )
    .await;
    let found = audit_all(&s).await;
    assert_eq!(
        rules(&found),
        vec![(Rule::DecidedTwice, Some(s.open))],
        "{found:#?}"
    );
}

#[tokio::test]
async fn settlements_missing_wrong_or_unexpected_are_reported() {
    let s = sale().await;
    exec(
        &s,
        &format!("DELETE FROM settlements WHERE lot_id = '{}'", s.sold),
    )
    .await;
    assert_eq!(
        rules(&audit_all(&s).await),
        vec![(Rule::Settlement, Some(s.sold))]
    );
    exec(
        &s,
        &format!(
            "INSERT INTO settlements (lot_id, user_id, amount, decided_at)
             VALUES ('{}', '{}', 1200, 7), ('{}', '{}', 1000, 8)",
            s.sold, s.bob, s.open, s.bob
        ),
    )
    .await;
    let found = audit_all(&s).await;
    let mut r = rules(&found);
    r.sort_by_key(|(_, l)| *l == Some(s.open));
    assert_eq!(
        r,
        vec![
            (Rule::Settlement, Some(s.sold)),
            (Rule::Settlement, Some(s.open))
        ],
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.lot == Some(s.sold) && v.detail.contains("lot high 1200")),
        "the wrong winner: {found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.lot == Some(s.open) && v.detail.contains("open")),
        "a lot still open has no settlement: {found:#?}"
    );
}

#[tokio::test]
async fn a_lot_row_that_disagrees_with_its_bids_is_reported() {
    let s = sale().await;
    exec(
        &s,
        &format!("UPDATE lots SET bid_count = 2 WHERE id = '{}'", s.open),
    )
    .await;
    let found = audit_all(&s).await;
    assert_eq!(rules(&found), vec![(Rule::LotState, Some(s.open))]);
    assert!(found[0].detail.contains("bid_count 2; accepted bids: 1"));
}

#[tokio::test]
async fn a_lot_changed_after_its_close_is_reported() {
    let s = sale().await;
    // A resume applied after the hammer, and the lot open again (behind the trigger's back).
    exec(
        &s,
        &format!(
            "INSERT INTO lot_commands (stream_seq, lot_id, kind, applied, state, decided_at)
             VALUES (12, '{lot}', 'resume', true, 'open', 12),
                    (13, '{lot}', 'hammer', true, 'closed', 13)",
            lot = s.sold
        ),
    )
    .await;
    let found = audit_all(&s).await;
    let details: Vec<&str> = found.iter().map(|v| v.detail.as_str()).collect();
    assert!(
        found
            .iter()
            .all(|v| v.rule == Rule::Reopened && v.lot == Some(s.sold)),
        "{found:#?}"
    );
    assert!(
        details.contains(&"closed 2 times (first at seq 7)"),
        "{details:?}"
    );
    assert!(
        details.contains(&"resume applied at seq 12 after the close at seq 7"),
        "{details:?}"
    );

    exec(&s, "ALTER TABLE lots DISABLE TRIGGER lots_guard").await;
    exec(
        &s,
        &format!(
            "UPDATE lots SET state = 'open', outcome = NULL WHERE id = '{}'",
            s.sold
        ),
    )
    .await;
    exec(
        &s,
        &format!(
            "INSERT INTO bids (lot_id, user_id, idem, amount, status, stream_seq, decided_at)
             VALUES ('{}', '{}', 'late', 1300, 'accepted', 14, 14)",
            s.sold, s.bob
        ),
    )
    .await;
    let found = audit_all(&s).await;
    let details: Vec<&str> = found.iter().map(|v| v.detail.as_str()).collect();
    assert!(
        details.contains(&"bid 1300 accepted at seq 14 after the close at seq 7"),
        "{details:?}"
    );
    assert!(
        details.contains(&"closed at seq 7 but the lot is open"),
        "{details:?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.rule == Rule::Settlement && v.lot == Some(s.sold)),
        "the settlement of a lot no longer sold: {found:#?}"
    );
}
