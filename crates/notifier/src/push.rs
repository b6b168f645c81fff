//! What a job sends, with no I/O: the texts, the batches of recipients, each batch's
//! idempotency key, and the `POST /notifications` body as OneSignal documents it.
//!
//! The idempotency key is what makes a push arrive once. It is a name-based UUID computed from
//! the job's content (never from a delivery, a process or the clock) and the batch number, so
//! every retry, every redelivery after a crash and every other instance sends the same key for
//! the same batch, and OneSignal answers the repeat with the first result instead of sending
//! again. The content names the event exactly once: an event starts once, a lot is won once, and
//! a user is outbid on a lot once per high bid (highs only rise).

use schemas::nats::NotifyJob;
use schemas::{EventId, LotId, UserId};
use serde_json::{json, Value};
use uuid::Uuid;

/// Most recipients in one request.
pub const MAX_BATCH: usize = 2_000;

/// Gavel's namespace for push keys. Fixed forever: changing it would make every retry of a push
/// sent before the change a new notification.
pub const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6761_7665_6c2d_4f53_8a1e_7075_7368_6b65);

/// The vehicle a lot sells, for the text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vehicle {
    pub year: i32,
    pub make: String,
    pub model: String,
}

/// What Postgres says about the job's event and lot; either may be missing (a row deleted since,
/// a test without a catalogue) and the text falls back to plainer words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    pub event_name: Option<String>,
    pub vehicle: Option<Vehicle>,
}

/// One notification request: one batch of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The job's kind (`event_starting`, `outbid`, `won`), for logs and metrics.
    pub kind: &'static str,
    pub idempotency_key: Uuid,
    /// 0-based batch number, and how many batches the job has.
    pub batch: usize,
    pub batches: usize,
    /// External ids (Gavel user ids), at most [`MAX_BATCH`].
    pub recipients: Vec<UserId>,
    pub heading: String,
    pub text: String,
    pub event_id: EventId,
    pub lot_id: Option<LotId>,
}

impl Push {
    /// The request body: app, key, `push` channel, the recipients by external id, the English
    /// heading and text, and the ids the app opens.
    pub fn body(&self, app_id: &str) -> Value {
        let mut data = json!({ "kind": self.kind, "event_id": self.event_id });
        if let Some(lot) = self.lot_id {
            data["lot_id"] = json!(lot);
        }
        json!({
            "app_id": app_id,
            "idempotency_key": self.idempotency_key,
            "target_channel": "push",
            "include_aliases": { "external_id": self.recipients },
            "headings": { "en": self.heading },
            "contents": { "en": self.text },
            "data": data,
        })
    }
}

/// The key of batch `batch` of `job`: a version-3 (name-based) UUID of the job's identity.
///
/// Version 3 rather than 5 because OneSignal's reference has asked for "v3 or v4" keys and now
/// for RFC 9562 ones: a v3 key is both, and MD5 is no weakness in a de-duplication name.
pub fn idempotency_key(job: &NotifyJob, batch: usize) -> Uuid {
    let name = match job {
        NotifyJob::EventStarting { event_id } => format!("event_starting/{event_id}/{batch}"),
        NotifyJob::Outbid {
            user_id,
            lot_id,
            high,
            ..
        } => format!("outbid/{lot_id}/{user_id}/{high}/{batch}"),
        NotifyJob::Won {
            user_id, lot_id, ..
        } => format!("won/{lot_id}/{user_id}/{batch}"),
    };
    Uuid::new_v3(&KEY_NAMESPACE, name.as_bytes())
}

/// The pushes of a job: one per batch of at most `batch_max` recipients. `cohort` is the
/// event's cohort for `event_starting` (ignored otherwise); an empty cohort sends nothing.
pub fn pushes(
    job: &NotifyJob,
    details: &Details,
    cohort: &[UserId],
    batch_max: usize,
) -> Vec<Push> {
    let batch_max = batch_max.clamp(1, MAX_BATCH);
    let (heading, text) = texts(job, details);
    let (event_id, lot_id, recipients): (EventId, Option<LotId>, Vec<UserId>) = match job {
        NotifyJob::EventStarting { event_id } => (*event_id, None, cohort.to_vec()),
        NotifyJob::Outbid {
            user_id,
            event_id,
            lot_id,
            ..
        }
        | NotifyJob::Won {
            user_id,
            event_id,
            lot_id,
            ..
        } => (*event_id, Some(*lot_id), vec![*user_id]),
    };
    let batches = recipients.len().div_ceil(batch_max);
    recipients
        .chunks(batch_max)
        .enumerate()
        .map(|(batch, chunk)| Push {
            kind: job.kind(),
            idempotency_key: idempotency_key(job, batch),
            batch,
            batches,
            recipients: chunk.to_vec(),
            heading: heading.clone(),
            text: text.clone(),
            event_id,
            lot_id,
        })
        .collect()
}

/// The heading and text of a job's push.
pub fn texts(job: &NotifyJob, details: &Details) -> (String, String) {
    let vehicle = details
        .vehicle
        .as_ref()
        .map(|v| format!("{} {} {}", v.year, v.make, v.model));
    match job {
        NotifyJob::EventStarting { .. } => {
            let name = details.event_name.as_deref().unwrap_or("Your auction");
            (
                "Auction starting now".into(),
                format!("{name} is live. Open Gavel to watch the lanes and bid."),
            )
        }
        NotifyJob::Outbid {
            your_bid,
            high,
            min_next,
            ..
        } => {
            let on = vehicle.map_or_else(|| "a lot".to_owned(), |v| format!("the {v}"));
            (
                "You've been outbid".into(),
                format!(
                    "The high bid on {on} is now {}, over your {}. Bid {} or more to lead again.",
                    dollars(*high),
                    dollars(*your_bid),
                    dollars(*min_next)
                ),
            )
        }
        NotifyJob::Won { amount, pickup, .. } => {
            let heading =
                vehicle.map_or_else(|| "You won!".to_owned(), |v| format!("You won the {v}!"));
            let pickup = if pickup.trim().is_empty() {
                "Pickup details are in the app under Won.".to_owned()
            } else {
                format!("Pickup: {}", pickup.trim())
            };
            (
                heading,
                format!("Hammer price {}. {pickup}", dollars(*amount)),
            )
        }
    }
}

/// Cents as dollars for people: `$12,300`, `$1,234.50`.
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let (whole, frac) = (abs / 100, abs % 100);
    let digits = whole.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac == 0 {
        format!("{sign}${grouped}")
    } else {
        format!("{sign}${grouped}.{frac:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbid(high: i64) -> NotifyJob {
        NotifyJob::Outbid {
            user_id: UserId(Uuid::from_u128(1)),
            event_id: EventId(Uuid::from_u128(2)),
            lot_id: LotId(Uuid::from_u128(3)),
            your_bid: 1_230_000,
            high,
            min_next: high + 5_000,
        }
    }

    fn won() -> NotifyJob {
        NotifyJob::Won {
            user_id: UserId(Uuid::from_u128(1)),
            event_id: EventId(Uuid::from_u128(2)),
            lot_id: LotId(Uuid::from_u128(3)),
            amount: 1_234_550,
            pickup: "Gate 3, bring ID".into(),
        }
    }

    fn users(n: u128) -> Vec<UserId> {
        (0..n).map(|i| UserId(Uuid::from_u128(1_000 + i))).collect()
    }

    #[test]
    fn dollars_group_thousands_and_keep_cents() {
        assert_eq!(dollars(0), "$0");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(100), "$1");
        assert_eq!(dollars(99_999), "$999.99");
        assert_eq!(dollars(100_000), "$1,000");
        assert_eq!(dollars(1_230_000), "$12,300");
        assert_eq!(dollars(12_345_678_901), "$123,456,789.01");
        assert_eq!(dollars(-150), "-$1.50");
    }

    #[test]
    fn keys_are_deterministic_per_job_and_batch() {
        let a = idempotency_key(&outbid(1_240_000), 0);
        assert_eq!(a, idempotency_key(&outbid(1_240_000), 0));
        assert_eq!(a.get_version_num(), 3);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        // Another high is another outbid; another batch is another request.
        assert_ne!(a, idempotency_key(&outbid(1_250_000), 0));
        let start = NotifyJob::EventStarting {
            event_id: EventId(Uuid::from_u128(2)),
        };
        assert_ne!(idempotency_key(&start, 0), idempotency_key(&start, 1));
        assert_ne!(idempotency_key(&won(), 0), a);
        // The text does not matter: a job is the same job whatever Postgres says about it.
        let mut other_pickup = won();
        if let NotifyJob::Won { pickup, .. } = &mut other_pickup {
            *pickup = "Dock 9".into();
        }
        assert_eq!(
            idempotency_key(&other_pickup, 0),
            idempotency_key(&won(), 0)
        );
        // Pinned: a change here re-sends every push retried across the upgrade.
        assert_eq!(
            idempotency_key(&start, 0),
            Uuid::new_v3(
                &KEY_NAMESPACE,
                b"event_starting/00000000-0000-0000-0000-000000000002/0"
            )
        );
    }

    #[test]
    fn a_cohort_is_split_in_batches_of_at_most_2000() {
        let start = NotifyJob::EventStarting {
            event_id: EventId(Uuid::from_u128(2)),
        };
        let cohort = users(4_500);
        let ps = pushes(&start, &Details::default(), &cohort, MAX_BATCH);
        let sizes: Vec<usize> = ps.iter().map(|p| p.recipients.len()).collect();
        assert_eq!(sizes, [2_000, 2_000, 500]);
        assert!(ps.iter().all(|p| p.batches == 3));
        assert_eq!(
            ps.iter()
                .flat_map(|p| p.recipients.clone())
                .collect::<Vec<_>>(),
            cohort,
            "every member once, in order"
        );
        let keys: std::collections::HashSet<_> = ps.iter().map(|p| p.idempotency_key).collect();
        assert_eq!(keys.len(), 3);
        // Exactly full batches, a smaller limit, nobody, and a limit out of range.
        assert_eq!(
            pushes(&start, &Details::default(), &users(4_000), 2_000).len(),
            2
        );
        assert_eq!(pushes(&start, &Details::default(), &users(7), 3).len(), 3);
        assert!(pushes(&start, &Details::default(), &[], 2_000).is_empty());
        assert_eq!(
            pushes(&start, &Details::default(), &users(2_001), 50_000).len(),
            2
        );
    }

    #[test]
    fn outbid_and_won_go_to_their_one_user() {
        let ps = pushes(&outbid(1_240_000), &Details::default(), &users(3), 2_000);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].recipients, vec![UserId(Uuid::from_u128(1))]);
        assert_eq!(ps[0].lot_id, Some(LotId(Uuid::from_u128(3))));
        assert_eq!(pushes(&won(), &Details::default(), &[], 2_000).len(), 1);
    }

    #[test]
    fn texts_name_the_car_and_format_money_as_dollars() {
        let details = Details {
            event_name: Some("Tuesday Dealer Sale".into()),
            vehicle: Some(Vehicle {
                year: 2019,
                make: "Toyota".into(),
                model: "Corolla".into(),
            }),
        };
        let (h, t) = texts(&outbid(1_240_000), &details);
        assert_eq!(h, "You've been outbid");
        assert_eq!(
            t,
            "The high bid on the 2019 Toyota Corolla is now $12,400, over your $12,300. \
             Bid $12,450 or more to lead again."
        );
        let (h, t) = texts(&won(), &details);
        assert_eq!(h, "You won the 2019 Toyota Corolla!");
        assert_eq!(t, "Hammer price $12,345.50. Pickup: Gate 3, bring ID");
        let start = NotifyJob::EventStarting {
            event_id: EventId(Uuid::from_u128(2)),
        };
        let (h, t) = texts(&start, &details);
        assert_eq!(h, "Auction starting now");
        assert!(t.starts_with("Tuesday Dealer Sale is live."), "{t}");
        // Without details the words are plainer, never empty.
        let (h, t) = texts(&won(), &Details::default());
        assert_eq!(h, "You won!");
        assert!(t.contains("$12,345.50"));
        let (_, t) = texts(&outbid(1_240_000), &Details::default());
        assert!(t.starts_with("The high bid on a lot is now $12,400"), "{t}");
        let mut no_pickup = won();
        if let NotifyJob::Won { pickup, .. } = &mut no_pickup {
            pickup.clear();
        }
        assert!(texts(&no_pickup, &details)
            .1
            .ends_with("in the app under Won."));
    }

    #[test]
    fn the_body_is_what_onesignal_documents() {
        let p = &pushes(&won(), &Details::default(), &[], 2_000)[0];
        let b = p.body("app-1");
        assert_eq!(b["app_id"], "app-1");
        assert_eq!(b["target_channel"], "push");
        assert_eq!(
            b["include_aliases"]["external_id"],
            json!(["00000000-0000-0000-0000-000000000001"])
        );
        assert_eq!(b["idempotency_key"], json!(p.idempotency_key.to_string()));
        assert_eq!(b["headings"]["en"], "You won!");
        assert!(b["contents"]["en"].as_str().unwrap().contains("Gate 3"));
        assert_eq!(b["data"]["kind"], "won");
        assert_eq!(b["data"]["lot_id"], "00000000-0000-0000-0000-000000000003");
        assert_eq!(
            b["data"]["event_id"],
            "00000000-0000-0000-0000-000000000002"
        );
        // Exactly one targeting mode.
        for other in [
            "included_segments",
            "filters",
            "include_subscription_ids",
            "include_player_ids",
            "include_external_user_ids",
        ] {
            assert!(b.get(other).is_none(), "{other}");
        }
        let start = NotifyJob::EventStarting {
            event_id: EventId(Uuid::from_u128(2)),
        };
        let b = pushes(&start, &Details::default(), &users(1), 2_000)[0].body("a");
        assert!(b["data"].get("lot_id").is_none());
    }
}
