//! Queries against a real Postgres: users, leases and the batch statement's guards.

use schemas::frames::BidStatus;
use schemas::{LotId, LotState, UserId};
use store::bidding::{self as db, Batch, BidRecord, LotRecord};
use store::StoreError;
use testkit::TestDb;

async fn db() -> TestDb {
    let db = TestDb::new().await.unwrap();
    store::migrate(&db.pool).await.unwrap();
    db
}

#[tokio::test]
async fn users_are_unique_by_email_case_insensitively_and_passwords_verify() {
    let db = db().await;
    let hash = store::users::hash_password("correct horse").unwrap();
    let u = store::users::create_user(&db.pool, "Ann@Example.com", &hash, "Ann", false, false)
        .await
        .unwrap();
    assert_eq!(
        (u.email.as_str(), u.role.as_str(), u.verified),
        ("ann@example.com", "buyer", false)
    );
    let dup =
        store::users::create_user(&db.pool, "ann@example.COM", &hash, "Ann 2", false, false).await;
    assert!(matches!(dup, Err(StoreError::Conflict(c)) if c == "users_email_key"));
    let bad = store::users::create_user(&db.pool, "not-an-email", &hash, "X", false, false).await;
    assert!(matches!(bad, Err(StoreError::Constraint(c)) if c == "users_email_shape"));
    let (found, h) = store::users::user_by_email(&db.pool, "ANN@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, u.id);
    assert!(store::users::verify_password("correct horse", &h));
    assert!(!store::users::verify_password("wrong horse", &h));
    assert!(!store::users::verify_password("correct horse", "garbage"));
    assert!(
        store::users::set_verified(&db.pool, UserId(u.id))
            .await
            .unwrap()
            .verified
    );
    assert_eq!(
        db::verified_users(&db.pool, &[UserId(u.id), UserId::new()])
            .await
            .unwrap(),
        vec![UserId(u.id)]
    );
}

#[tokio::test]
async fn leases_bump_the_epoch_on_takeover_and_renew_only_for_the_holder() {
    let db = db().await;
    let a = db::acquire_lease(&db.pool, 3, "A", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(db::acquire_lease(&db.pool, 3, "B", 60_000)
        .await
        .unwrap()
        .is_none());
    let again = db::acquire_lease(&db.pool, 3, "A", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.epoch,
        a.epoch + 1,
        "re-taking our own lease fences our older self"
    );
    assert!(matches!(
        db::renew_lease(&db.pool, &a, 1_000).await,
        Err(StoreError::Fenced)
    ));
    db::renew_lease(&db.pool, &again, 1_000).await.unwrap();
    db::release_lease(&db.pool, &again).await.unwrap();
    let b = db::acquire_lease(&db.pool, 3, "B", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.epoch, again.epoch + 1);
    db::commit_batch(
        &db.pool,
        &b,
        60_000,
        &Batch {
            applied_seq: 9,
            announced_seq: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(db::lease_position(&db.pool, &b).await.unwrap(), (9, 4));
    db::set_announced(&db.pool, &b, 9).await.unwrap();
    assert_eq!(db::lease_position(&db.pool, &b).await.unwrap(), (9, 9));
}

#[tokio::test]
async fn a_batch_naming_a_missing_lot_commits_nothing() {
    let db = db().await;
    let lease = db::acquire_lease(&db.pool, 0, "A", 60_000)
        .await
        .unwrap()
        .unwrap();
    let lot = LotId::new();
    let user = UserId::new();
    let batch = Batch {
        applied_seq: 1,
        announced_seq: 0,
        bids: vec![BidRecord {
            lot_id: lot,
            user_id: user,
            idem: "k".into(),
            amount: 100,
            seen_high: None,
            status: BidStatus::Accepted,
            reason: None,
            high: Some(100),
            min_next: Some(200),
            version: Some(1),
            bid_count: Some(1),
            ends_at: Some(1),
            prev_bidder: None,
            prev_high: None,
            stream_seq: 1,
            decided_at: 1,
            traceparent: None,
        }],
        lots: vec![LotRecord {
            id: lot,
            event_id: schemas::EventId::new(),
            lane: 1,
            position: 1,
            state: LotState::Open,
            outcome: None,
            starting_price: 100,
            reserve: 0,
            high: Some(100),
            high_bidder: Some(user),
            bid_count: 1,
            version: 1,
            ends_at: Some(1),
            remaining_ms: None,
            applied_seq: 1,
            reset_seconds: 30,
            pickup: String::new(),
        }],
        ..Default::default()
    };
    let r = db::commit_batch(&db.pool, &lease, 60_000, &batch).await;
    assert!(matches!(r, Err(StoreError::Internal(_))), "{r:?}");
    assert_eq!(db::lease_position(&db.pool, &lease).await.unwrap(), (0, 0));
    let (bids, _) = db::decisions_by_seq(&db.pool, &[1]).await.unwrap();
    assert!(bids.is_empty(), "no decision without its lot state");
}
