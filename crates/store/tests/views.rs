//! The admin's checked lot listing, the user queries and the buyers' views, on a real Postgres.

use schemas::{EventId, UserId};
use store::catalog::*;
use store::StoreError;
use testkit::TestDb;

async fn db() -> TestDb {
    let db = TestDb::new().await.expect("test database");
    store::migrate(&db.pool).await.expect("migrations");
    db
}

/// A Kia with this VIN and these photos, from `vendor`.
async fn vehicle(
    pool: &store::PgPool,
    vendor: schemas::VendorId,
    vin: &str,
    photos: Vec<String>,
) -> schemas::VehicleId {
    create_vehicle(
        pool,
        &NewVehicle {
            vendor_id: vendor,
            vin: vin.into(),
            year: 2020,
            make: "Kia".into(),
            model: "Rio".into(),
            trim: String::new(),
            mileage: 5,
            photos,
            pickup: "Gate 1".into(),
        },
    )
    .await
    .unwrap()
}

/// A draft event with two lanes.
async fn two_lane_event(pool: &store::PgPool) -> EventId {
    create_event(
        pool,
        &NewEvent {
            name: "E".into(),
            starts_at: 1,
            lanes: 2,
            lot_seconds: 30,
            reset_seconds: 30,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn add_lot_checked_refuses_by_name() {
    let db = db().await;
    let pool = &db.pool;
    let vendor = create_vendor(pool, "V", "").await.unwrap();
    let vehicle = vehicle(pool, vendor, "VIN1", vec!["p".into()]).await;
    let event = two_lane_event(pool).await;
    let lot = |event_id, lane, position| NewLot {
        event_id,
        vehicle_id: vehicle,
        lane,
        position,
        starting_price: 1_000,
        reserve: 0,
    };
    assert!(matches!(
        add_lot_checked(pool, &lot(EventId::new(), 1, 1)).await,
        Err(StoreError::NotFound)
    ));
    for lane in [0, 3] {
        assert!(matches!(
            add_lot_checked(pool, &lot(event, lane, 1)).await,
            Err(StoreError::Constraint(c)) if c == "lots_lane_in_event"
        ));
    }
    let id = add_lot_checked(pool, &lot(event, 2, 1)).await.unwrap();
    assert!(matches!(
        add_lot_checked(pool, &lot(event, 2, 1)).await,
        Err(StoreError::Conflict(c)) if c == "lots_slot_key"
    ));
    let mut unknown_vehicle = lot(event, 1, 1);
    unknown_vehicle.vehicle_id = schemas::VehicleId::new();
    assert!(matches!(
        add_lot_checked(pool, &unknown_vehicle).await,
        Err(StoreError::Constraint(c)) if c == "lots_vehicle_id_fkey"
    ));

    let view = store::views::lot_view(pool, id).await.unwrap().unwrap();
    assert_eq!(view.state, schemas::LotState::Draft);
    assert_eq!(view.min_next, 1_000);
    assert_eq!(view.vehicle.photos, vec!["p".to_owned()]);
    schedule_event(pool, event).await.unwrap();
    let lots = store::views::event_lots(pool, event).await.unwrap();
    assert_eq!(lots.len(), 1);
    assert_eq!(lots[0].state, schemas::LotState::Scheduled);
    let feed = store::views::events_by_status(pool, &["scheduled"])
        .await
        .unwrap();
    assert_eq!(feed.len(), 1);
    assert!(store::views::events_by_status(pool, &["live"])
        .await
        .unwrap()
        .is_empty());
    store::health::ping(pool).await.unwrap();
}

#[tokio::test]
async fn users_by_id_and_the_verification_queue() {
    let db = db().await;
    let pool = &db.pool;
    let a = store::users::create_user(pool, "a@x.io", "h", "A", false, false)
        .await
        .unwrap();
    let b = store::users::create_user(pool, "b@x.io", "h", "B", false, true)
        .await
        .unwrap();
    assert_eq!(
        store::users::user_by_id(pool, UserId(a.id)).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store::users::user_by_id(pool, UserId::new()).await.unwrap(),
        None
    );
    let queue = store::users::list_users(pool, Some(false)).await.unwrap();
    assert_eq!(queue, vec![a.clone()]);
    assert_eq!(
        store::users::list_users(pool, Some(true)).await.unwrap(),
        vec![b]
    );
    assert_eq!(store::users::list_users(pool, None).await.unwrap().len(), 2);
    assert!(store::views::won_lots(pool, UserId(a.id))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_next_lot_of_a_lane_is_its_first_still_on_the_block() {
    let db = db().await;
    let pool = &db.pool;
    let vendor = create_vendor(pool, "V", "").await.unwrap();
    let event = two_lane_event(pool).await;
    let add = |lane, position| async move {
        let vehicle = vehicle(pool, vendor, &format!("VIN{lane}{position}"), vec![]).await;
        add_lot(
            pool,
            &NewLot {
                event_id: event,
                vehicle_id: vehicle,
                lane,
                position,
                starting_price: 1_000,
                reserve: 0,
            },
        )
        .await
        .unwrap()
    };
    // Lane 1: the lot leaving the block, a cancelled one, then two waiting; lane 2: one lot.
    let leaving = add(1, 1).await;
    let cancelled = add(1, 2).await;
    let third = add(1, 3).await;
    let _fourth = add(1, 4).await;
    let only = add(2, 1).await;
    schedule_event(pool, event).await.unwrap();
    sqlx::query("UPDATE lots SET state = 'cancelled', outcome = 'cancelled' WHERE id = $1")
        .bind(cancelled.0)
        .execute(pool)
        .await
        .unwrap();

    let next = store::views::next_lot(pool, event, 1, leaving)
        .await
        .unwrap();
    assert_eq!(
        next.map(|l| (l.lot_id, l.lane, l.position)),
        Some((third, 1, 3))
    );
    // The lot leaving is skipped even while its own row still says it is on the block.
    assert_eq!(
        store::views::next_lot(pool, event, 2, only).await.unwrap(),
        None
    );
    // The same answer the full listing gives.
    let listed = store::views::event_lots(pool, event).await.unwrap();
    let by_listing = listed
        .iter()
        .filter(|l| l.lane == 1 && l.lot_id != leaving && l.state.on_the_block())
        .min_by_key(|l| l.position)
        .map(|l| l.lot_id);
    assert_eq!(by_listing, Some(third));
}
