//! The demo that `gavel dev` seeds: people to log in as, a vendor's dozen used cars, and an
//! auction of them that goes live on its own under a minute later.
//!
//! Safe to run again on the same database: users, the vendor and the vehicles are looked up
//! before they are created (by email, name and VIN), so a second run adds only a fresh event
//! with new lots for the same cars. Everything goes through `store`'s catalog and user
//! functions, the admin's own path; only the two look-ups it lacks are written here.

use anyhow::Context as _;
use schemas::{EventId, VehicleId, VendorId};
use store::catalog::{NewEvent, NewLot, NewVehicle};
use store::PgPool;

/// The password of every demo login (printed by `gavel dev`; these accounts are for a laptop).
pub const PASSWORD: &str = "gavel-demo";

/// The admin's email.
pub const ADMIN: &str = "admin@gavel.test";

/// The demo buyers, verified so they can bid at once: (email, name).
pub const BUYERS: [(&str, &str); 3] = [
    ("ada@gavel.test", "Ada Lovelace"),
    ("ben@gavel.test", "Ben Okafor"),
    ("cy@gavel.test", "Cy Tanaka"),
];

/// How long after seeding the event goes live: time to open the web client and log in.
pub const STARTS_IN_MS: i64 = 45_000;

/// Lanes of the demo event.
pub const LANES: i32 = 2;

/// A lot's first clock, in seconds. Shorter than the production default of 30 so that a
/// newcomer sees a car roll off the block within the first minute and the whole sale (six cars
/// a lane) runs in about two minutes without bids, yet long enough to bid from two browsers.
pub const LOT_SECONDS: i32 = 20;

/// What an accepted bid puts back on the clock, in seconds (15: a bidding war stays lively).
pub const RESET_SECONDS: i32 = 15;

const VENDOR: &str = "Northgate Auto Remarketing";
const VENDOR_CONTACT: &str = "Dana Whitfield, lot office, +1 555 0142, office@northgate.test";

/// One demo car: what the catalog shows, and the numbers of its lot.
struct Car {
    body: &'static str,
    year: i32,
    make: &'static str,
    model: &'static str,
    trim: &'static str,
    mileage: i32,
    /// VIN positions 1–8 (manufacturer and model descriptor); the check digit, model year code,
    /// plant and serial are added by [`vin`].
    wmi_vds: &'static str,
    plant: char,
    serial: &'static str,
    /// Whole dollars.
    starting: i64,
    /// Whole dollars; 0 is no reserve.
    reserve: i64,
}

/// One row of [`CARS`], its columns in order (a table reads better than struct literals).
#[allow(clippy::too_many_arguments)]
const fn car(
    body: &'static str,
    year: i32,
    make: &'static str,
    model: &'static str,
    trim: &'static str,
    mileage: i32,
    wmi_vds: &'static str,
    plant: char,
    serial: &'static str,
    starting: i64,
    reserve: i64,
) -> Car {
    Car {
        body,
        year,
        make,
        model,
        trim,
        mileage,
        wmi_vds,
        plant,
        serial,
        starting,
        reserve,
    }
}

/// A dozen plausible trade-ins, one of every body style the web client has an illustration for.
/// Some have no reserve (they sell to the first bid), some a reserve above the start (they go
/// unsold without a real bidding war), so a demo shows both outcomes.
#[rustfmt::skip]
const CARS: [Car; 12] = [
    car("sedan", 2019, "Toyota", "Camry", "SE", 48_210, "4T1B11HK", 'U', "263514", 12_000, 15_500),
    car("suv", 2018, "Honda", "CR-V", "EX-L AWD", 61_540, "2HKRW2H8", 'H', "512207", 13_500, 17_000),
    car("pickup", 2017, "Ford", "F-150", "XLT SuperCrew 4x4", 84_300, "1FTEW1EP", 'F', "641872", 16_000, 0),
    car("hatchback", 2016, "Volkswagen", "Golf", "1.8T SE", 72_900, "3VW217AU", 'M', "058133", 6_500, 8_000),
    car("coupe", 2020, "Ford", "Mustang", "EcoBoost Premium", 31_200, "1FA6P8TH", '5', "118604", 18_000, 22_500),
    car("van", 2019, "Chrysler", "Pacifica", "Touring L", 55_800, "2C4RC1BG", 'R', "602915", 14_000, 0),
    car("wagon", 2015, "Subaru", "Outback", "2.5i Premium", 98_400, "4S4BSBFC", '3', "284417", 7_000, 9_000),
    car("convertible", 2018, "Mazda", "MX-5 Miata", "Club", 22_650, "JM1NDAC7", '0', "214560", 15_000, 19_000),
    car("pickup", 2021, "Chevrolet", "Silverado 1500", "LT Crew Cab 4WD", 39_700, "3GCUYDED", 'G', "175392", 28_000, 33_000),
    car("suv", 2017, "Jeep", "Grand Cherokee", "Limited 4x4", 76_100, "1C4RJFBG", 'C', "539018", 15_500, 0),
    car("sedan", 2020, "Honda", "Civic", "EX", 35_420, "19XFC1F3", 'E', "008745", 13_000, 16_000),
    car("hatchback", 2014, "Toyota", "Prius", "Two", 92_300, "JTDKN3DU", '1', "374821", 5_500, 0),
];

/// What was seeded, for the banner.
#[derive(Debug)]
pub struct Demo {
    pub event_id: EventId,
    pub event_name: String,
    pub starts_at: i64,
    pub lots: usize,
}

/// Seeds the demo: users, vendor and vehicles once, and a new scheduled event every time.
pub async fn seed(pool: &PgPool, now_ms: i64) -> anyhow::Result<Demo> {
    ensure_user(pool, ADMIN, "Gavel Admin", true).await?;
    for (email, name) in BUYERS {
        ensure_user(pool, email, name, false).await?;
    }
    let vendor = ensure_vendor(pool).await?;
    let mut vehicles = Vec::with_capacity(CARS.len());
    for (i, car) in CARS.iter().enumerate() {
        vehicles.push(ensure_vehicle(pool, vendor, car, i).await?);
    }

    let starts_at = now_ms + STARTS_IN_MS;
    let event_name = format!("Northgate weekday sale, {}", utc_hhmm(starts_at));
    let event_id = store::catalog::create_event(
        pool,
        &NewEvent {
            name: event_name.clone(),
            starts_at,
            lanes: LANES,
            lot_seconds: LOT_SECONDS,
            reset_seconds: RESET_SECONDS,
        },
    )
    .await
    .context("creating the demo event")?;
    for (i, (car, vehicle_id)) in CARS.iter().zip(&vehicles).enumerate() {
        let (lane, position) = slot(i);
        store::catalog::add_lot(
            pool,
            &NewLot {
                event_id,
                vehicle_id: *vehicle_id,
                lane,
                position,
                starting_price: car.starting * 100,
                reserve: car.reserve * 100,
            },
        )
        .await
        .with_context(|| format!("listing the {} {} {}", car.year, car.make, car.model))?;
    }
    store::catalog::schedule_event(pool, event_id)
        .await
        .context("scheduling the demo event")?;
    tracing::info!(event = %event_id, starts_at, lots = CARS.len(), "demo seeded");
    Ok(Demo {
        event_id,
        event_name,
        starts_at,
        lots: CARS.len(),
    })
}

/// The `i`th car alternates between the lanes, so both lanes mix body styles and prices.
fn slot(i: usize) -> (i32, i32) {
    let lanes = LANES as usize;
    ((i % lanes) as i32 + 1, (i / lanes) as i32 + 1)
}

async fn ensure_user(pool: &PgPool, email: &str, name: &str, admin: bool) -> anyhow::Result<()> {
    if store::users::user_by_email(pool, email).await?.is_some() {
        return Ok(());
    }
    let hash = tokio::task::spawn_blocking(|| store::users::hash_password(PASSWORD)).await??;
    match store::users::create_user(pool, email, &hash, name, admin, true).await {
        // Another `gavel dev` on the same database got there first.
        Ok(_) | Err(store::StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {email}")),
    }
}

async fn ensure_vendor(pool: &PgPool) -> anyhow::Result<VendorId> {
    let found: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM vendors WHERE name = $1 ORDER BY created_at LIMIT 1")
            .bind(VENDOR)
            .fetch_optional(pool)
            .await?;
    match found {
        Some(id) => Ok(VendorId(id)),
        None => Ok(store::catalog::create_vendor(pool, VENDOR, VENDOR_CONTACT).await?),
    }
}

async fn ensure_vehicle(
    pool: &PgPool,
    vendor_id: VendorId,
    car: &Car,
    i: usize,
) -> anyhow::Result<VehicleId> {
    let vin = vin(car.wmi_vds, car.year, car.plant, car.serial);
    let by_vin = || async {
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM vehicles WHERE vin = $1")
            .bind(&vin)
            .fetch_optional(pool)
            .await
    };
    if let Some(id) = by_vin().await? {
        return Ok(VehicleId(id));
    }
    let created = store::catalog::create_vehicle(
        pool,
        &NewVehicle {
            vendor_id,
            vin: vin.clone(),
            year: car.year,
            make: car.make.into(),
            model: car.model.into(),
            trim: car.trim.into(),
            mileage: car.mileage,
            photos: vec![format!("/assets/cars/{}.svg", car.body)],
            pickup: pickup(i),
        },
    )
    .await;
    match created {
        Ok(id) => Ok(id),
        Err(store::StoreError::Conflict(_)) => by_vin()
            .await?
            .map(VehicleId)
            .with_context(|| format!("vehicle {vin} exists but cannot be read")),
        Err(e) => Err(e).with_context(|| format!("creating vehicle {vin}")),
    }
}

/// Pickup instructions as a winner reads them on the Won list.
fn pickup(i: usize) -> String {
    format!(
        "Collect from {VENDOR}, 1840 Industrial Pkwy, Gate B, bay {bay}. Mon–Fri 8:00–17:00, \
         within 5 business days of the sale. Bring photo ID and the gate pass from your Won \
         list; keys and title paperwork are released at the lot office. Trailers welcome, \
         no drive-away without proof of insurance.",
        bay = 11 + i
    )
}

/// A 17-character VIN with a correct check digit (position 9, North American rules) and the
/// model-year code of `year` (position 10).
fn vin(wmi_vds: &str, year: i32, plant: char, serial: &str) -> String {
    // 2010 is A; I, O, Q, U, Z and 0 are never year codes.
    const YEARS: &[u8] = b"ABCDEFGHJKLMNPRSTVWXY";
    let year_code = YEARS[(year - 2010).rem_euclid(YEARS.len() as i32) as usize] as char;
    let mut chars: Vec<char> = format!("{wmi_vds}0{year_code}{plant}{serial}")
        .chars()
        .collect();
    chars[8] = vin_check_digit(&chars);
    chars.into_iter().collect()
}

/// The check digit of a VIN (its position 9 is ignored): transliterate, weigh, sum mod 11.
fn vin_check_digit(vin: &[char]) -> char {
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let value = |c: char| match c {
        '0'..='9' => c as u32 - '0' as u32,
        'A' | 'J' => 1,
        'B' | 'K' | 'S' => 2,
        'C' | 'L' | 'T' => 3,
        'D' | 'M' | 'U' => 4,
        'E' | 'N' | 'V' => 5,
        'F' | 'W' => 6,
        'G' | 'P' | 'X' => 7,
        'H' | 'Y' => 8,
        'R' | 'Z' => 9,
        _ => 0,
    };
    let sum: u32 = vin.iter().zip(WEIGHTS).map(|(c, w)| value(*c) * w).sum();
    match sum % 11 {
        10 => 'X',
        d => char::from_digit(d, 10).unwrap_or('0'),
    }
}

/// `HH:MM UTC` of a time in ms since the epoch (a name tells two demo events apart).
fn utc_hhmm(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02} UTC", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_match_known_vins() {
        // Real VINs from public recall notices and the NHTSA documentation example.
        for known in [
            "1M8GDM9AXKP042788",
            "11111111111111111",
            "1HGCM82633A004352",
        ] {
            let chars: Vec<char> = known.chars().collect();
            assert_eq!(vin_check_digit(&chars), chars[8], "{known}");
        }
    }

    #[test]
    fn demo_vins_are_plausible_and_distinct() {
        let vins: Vec<String> = CARS
            .iter()
            .map(|c| vin(c.wmi_vds, c.year, c.plant, c.serial))
            .collect();
        for (v, c) in vins.iter().zip(&CARS) {
            assert_eq!(v.len(), 17, "{v}");
            assert!(
                v.chars()
                    .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase()),
                "{v}"
            );
            assert!(!v.contains(['I', 'O', 'Q']), "{v}");
            let chars: Vec<char> = v.chars().collect();
            assert_eq!(vin_check_digit(&chars), chars[8], "{v}");
            assert!(v.starts_with(c.wmi_vds));
        }
        assert_eq!(&vins[0][9..10], "K", "2019 is K");
        assert_eq!(&vins[11][9..10], "E", "2014 is E");
        let mut unique = vins.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), vins.len());
    }

    #[test]
    fn the_cars_fill_both_lanes_and_every_illustration() {
        let slots: Vec<(i32, i32)> = (0..CARS.len()).map(slot).collect();
        assert_eq!(slots[0], (1, 1));
        assert_eq!(slots[1], (2, 1));
        assert_eq!(slots[11], (2, 6));
        for body in [
            "sedan",
            "suv",
            "pickup",
            "hatchback",
            "coupe",
            "van",
            "wagon",
            "convertible",
        ] {
            assert!(CARS.iter().any(|c| c.body == body), "{body}");
        }
        assert!(CARS
            .iter()
            .all(|c| c.reserve == 0 || c.reserve > c.starting));
        assert!((8..=128).contains(&PASSWORD.len()));
    }

    #[test]
    fn names_the_time_of_day() {
        assert_eq!(utc_hhmm(0), "00:00 UTC");
        assert_eq!(utc_hhmm((13 * 60 + 7) * 60_000 + 59_999), "13:07 UTC");
    }
}
