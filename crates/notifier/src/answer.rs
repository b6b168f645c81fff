//! What one OneSignal answer means, with no I/O: sent, not delivered (final), refused (dead
//! letter), or try again after a delay. Every retry repeats the same body with the same
//! idempotency key, so retrying is always safe; what is decided here is only whether it is
//! useful, and when.
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx with a notification `id` (maybe with `errors`: invalid aliases) | sent; the errors are logged |
//! | 2xx without an `id` ("All included players are not subscribed") | not delivered: logged, not retried |
//! | 400 and other 4xx (409, 413, 422 …) | refused: dead letter with OneSignal's reason |
//! | 401, 403 (bad key), 404 and 3xx (bad URL) | retried slowly and loudly: ops must fix the configuration |
//! | 429 | retried after `Retry-After` (else backoff) |
//! | 408, 5xx, timeouts, dropped connections, unreadable 2xx | exponential backoff with jitter |

use serde_json::Value;
use std::time::Duration;

/// What came back from one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP answer.
    Answered {
        status: u16,
        /// The `Retry-After` header, as sent.
        retry_after: Option<String>,
        body: String,
    },
    /// No answer within the request timeout.
    TimedOut,
    /// Connection refused, reset or closed before a whole answer came.
    Failed(String),
}

/// Why an attempt is repeated (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    RateLimited,
    /// The key or the URL is wrong: nothing will get through until ops fix it.
    Misconfigured,
    ServerError,
    Timeout,
    Connection,
    /// A success status whose body is not OneSignal's: whether it was sent is unknown.
    Unreadable,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::RateLimited => "rate_limited",
            Cause::Misconfigured => "misconfigured",
            Cause::ServerError => "server_error",
            Cause::Timeout => "timeout",
            Cause::Connection => "connection",
            Cause::Unreadable => "unreadable",
        }
    }

    /// Whether every request is affected, so all of them should wait (not only this one).
    pub fn pauses_everyone(self) -> bool {
        matches!(self, Cause::RateLimited | Cause::Misconfigured)
    }
}

/// The decision about one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// OneSignal created the notification. `errors` lists what it said besides (for example
    /// external ids that match no user), for the log.
    Sent { id: String, errors: Vec<String> },
    /// A final answer that sent nothing, such as nobody in the batch being subscribed.
    NotDelivered { errors: Vec<String> },
    /// Refused for good: the request itself is wrong. Goes to the dead letters.
    Refused { status: u16, reason: String },
    /// Try the same request again after `after`.
    Retry {
        after: Duration,
        cause: Cause,
        detail: String,
    },
}

impl Verdict {
    /// Whether the push is finished (nothing more to send for it).
    pub fn is_final(&self) -> bool {
        !matches!(self, Verdict::Retry { .. })
    }
}

/// Delays between attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff; each failure doubles it.
    pub base: Duration,
    /// The longest backoff.
    pub max: Duration,
    /// The wait after a 401/403/404 (bad key or URL): slow, since only ops can fix it.
    pub misconfigured: Duration,
    /// The longest `Retry-After` honoured as sent (a larger one is cut to this).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            misconfigured: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

/// The backoff after the `failures`th failure in a row (1-based): `base · 2^(failures-1)`,
/// capped at `max`, then "equal jitter": a random point in its upper half, so instances that
/// failed together do not retry together, yet never much sooner than planned. `jitter` is a
/// uniform random number in `[0, 1)`.
pub fn backoff(failures: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let full = policy
        .base
        .saturating_mul(1u32 << exp)
        .min(policy.max)
        .max(Duration::from_millis(1));
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Reads `Retry-After` in seconds (the form OneSignal sends). `None` when absent or unreadable.
pub fn retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// Judges the answer to the `failures`th attempt in a row that may fail (1-based).
pub fn judge(reply: &Reply, failures: u32, policy: &RetryPolicy, jitter: f64) -> Verdict {
    let retry = |cause, detail: String| Verdict::Retry {
        after: backoff(failures, policy, jitter),
        cause,
        detail,
    };
    let (status, retry_after_header, body) = match reply {
        Reply::TimedOut => return retry(Cause::Timeout, "no answer in time".into()),
        Reply::Failed(why) => return retry(Cause::Connection, why.clone()),
        Reply::Answered {
            status,
            retry_after,
            body,
        } => (*status, retry_after.as_deref(), body.as_str()),
    };
    let json: Option<Value> = serde_json::from_str(body).ok();
    let errors = json.as_ref().map(errors_of).unwrap_or_default();
    let said = || {
        if errors.is_empty() {
            shorten(body)
        } else {
            errors.join("; ")
        }
    };
    match status {
        200..=299 => {
            let Some(json) = json.filter(Value::is_object) else {
                return retry(Cause::Unreadable, format!("{status}: {}", shorten(body)));
            };
            match json.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => Verdict::Sent {
                    id: id.to_owned(),
                    errors,
                },
                _ => Verdict::NotDelivered {
                    errors: if errors.is_empty() {
                        vec!["no notification id in the answer".into()]
                    } else {
                        errors
                    },
                },
            }
        }
        429 => {
            let after = retry_after_header
                .and_then(retry_after)
                .map(|d| d.min(policy.max_retry_after))
                .unwrap_or_else(|| backoff(failures, policy, jitter));
            Verdict::Retry {
                after,
                cause: Cause::RateLimited,
                detail: said(),
            }
        }
        401 | 403 | 404 | 300..=399 => Verdict::Retry {
            after: policy.misconfigured,
            cause: Cause::Misconfigured,
            detail: format!("{status}: {}", said()),
        },
        408 => retry(Cause::Timeout, format!("{status}: {}", said())),
        400..=499 => Verdict::Refused {
            status,
            reason: said(),
        },
        _ => retry(Cause::ServerError, format!("{status}: {}", said())),
    }
}

/// OneSignal's `errors`, in either documented shape, as readable lines: a list of messages
/// (`["All included players are not subscribed"]`), or an object such as
/// `{"invalid_aliases": {"external_id": ["a", "b"]}}` or `{"invalid_player_ids": [...]}`.
pub fn errors_of(body: &Value) -> Vec<String> {
    fn flat(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Null => {}
            Value::String(s) if prefix.is_empty() => out.push(s.clone()),
            Value::Array(items) if prefix.is_empty() => {
                for item in items {
                    flat("", item, out);
                }
            }
            Value::Array(items) => out.push(format!(
                "{prefix}: {}",
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flat(&key, v, out);
                }
            }
            other if prefix.is_empty() => out.push(other.to_string()),
            other => out.push(format!("{prefix}: {other}")),
        }
    }
    let mut out = Vec::new();
    if let Some(errors) = body.get("errors") {
        flat("", errors, &mut out);
    }
    out
}

fn shorten(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    if body.is_empty() {
        return "(empty body)".into();
    }
    match body.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            misconfigured: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }

    fn answer(status: u16, body: &str) -> Reply {
        Reply::Answered {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let p = policy();
        assert_eq!(backoff(1, &p, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(1, &p, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, &p, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(3, &p, 0.5), Duration::from_millis(300));
        assert_eq!(backoff(20, &p, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, &p, 0.0), Duration::from_millis(2_500));
        for failures in 1..40 {
            for jitter in [0.0, 0.3, 0.999] {
                let d = backoff(failures, &p, jitter);
                assert!(
                    d <= p.max && d >= Duration::from_millis(50),
                    "{failures} {d:?}"
                );
            }
        }
        // Never a zero wait, even with a zero base.
        let zero = RetryPolicy {
            base: Duration::ZERO,
            ..p
        };
        assert!(backoff(1, &zero, 0.0) > Duration::ZERO);
    }

    #[test]
    fn a_created_notification_is_sent_even_with_invalid_aliases() {
        let v = judge(
            &answer(
                200,
                r#"{"id":"b15ba6e5-2223-49d6-9eda-684b9051f5a8","external_id":null,
                    "errors":{"invalid_aliases":{"external_id":["u1","u2"]}}}"#,
            ),
            1,
            &policy(),
            0.5,
        );
        assert_eq!(
            v,
            Verdict::Sent {
                id: "b15ba6e5-2223-49d6-9eda-684b9051f5a8".into(),
                errors: vec!["invalid_aliases.external_id: u1, u2".into()],
            }
        );
        assert!(v.is_final());
        let v = judge(&answer(200, r#"{"id":"n1"}"#), 1, &policy(), 0.5);
        assert_eq!(
            v,
            Verdict::Sent {
                id: "n1".into(),
                errors: vec![]
            }
        );
    }

    #[test]
    fn nobody_subscribed_is_final_and_not_retried() {
        let v = judge(
            &answer(
                200,
                r#"{"id":"","errors":["All included players are not subscribed"]}"#,
            ),
            1,
            &policy(),
            0.5,
        );
        assert_eq!(
            v,
            Verdict::NotDelivered {
                errors: vec!["All included players are not subscribed".into()]
            }
        );
        let v = judge(
            &answer(200, r#"{"errors":{"invalid_player_ids":["p"]}}"#),
            1,
            &policy(),
            0.5,
        );
        assert_eq!(
            v,
            Verdict::NotDelivered {
                errors: vec!["invalid_player_ids: p".into()]
            }
        );
        assert!(matches!(
            judge(&answer(200, r#"{}"#), 1, &policy(), 0.5),
            Verdict::NotDelivered { .. }
        ));
    }

    #[test]
    fn a_bad_request_is_refused_with_onesignal_s_reason() {
        let v = judge(
            &answer(
                400,
                r#"{"errors":["Message Notifications must have English language content"]}"#,
            ),
            1,
            &policy(),
            0.5,
        );
        assert_eq!(
            v,
            Verdict::Refused {
                status: 400,
                reason: "Message Notifications must have English language content".into()
            }
        );
        assert!(matches!(
            judge(&answer(413, "too big"), 1, &policy(), 0.5),
            Verdict::Refused { status: 413, ref reason } if reason == "too big"
        ));
        assert!(matches!(
            judge(&answer(422, ""), 1, &policy(), 0.5),
            Verdict::Refused { status: 422, ref reason } if reason == "(empty body)"
        ));
    }

    #[test]
    fn a_bad_key_or_url_is_retried_slowly() {
        for status in [401, 403, 404, 301] {
            let v = judge(
                &answer(
                    status,
                    r#"{"errors":["Access denied.  Please include an 'Authorization: ...' header with a valid API key"]}"#,
                ),
                1,
                &policy(),
                0.5,
            );
            match v {
                Verdict::Retry { after, cause, .. } => {
                    assert_eq!(after, Duration::from_secs(30));
                    assert_eq!(cause, Cause::Misconfigured);
                    assert!(cause.pauses_everyone());
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn rate_limits_honour_retry_after() {
        let r = |h: Option<&str>| Reply::Answered {
            status: 429,
            retry_after: h.map(str::to_owned),
            body: r#"{"errors":["API rate limit exceeded."]}"#.into(),
        };
        let after = |v: Verdict| match v {
            Verdict::Retry { after, cause, .. } => {
                assert_eq!(cause, Cause::RateLimited);
                after
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            after(judge(&r(Some("2")), 1, &policy(), 0.0)),
            Duration::from_secs(2)
        );
        assert_eq!(
            after(judge(&r(Some(" 0.25 ")), 1, &policy(), 0.0)),
            Duration::from_millis(250)
        );
        // Absurd values are capped; unreadable or missing ones fall back to the backoff.
        assert_eq!(
            after(judge(&r(Some("86400")), 1, &policy(), 0.0)),
            Duration::from_secs(60)
        );
        assert_eq!(
            after(judge(&r(None), 3, &policy(), 0.0)),
            Duration::from_millis(200)
        );
        assert_eq!(
            after(judge(
                &r(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
                1,
                &policy(),
                1.0
            )),
            Duration::from_millis(100)
        );
        assert_eq!(retry_after("-1"), None);
        assert_eq!(retry_after("NaN"), None);
    }

    #[test]
    fn server_errors_timeouts_and_drops_back_off() {
        for (reply, cause) in [
            (answer(500, "oops"), Cause::ServerError),
            (
                answer(503, r#"{"errors":["Service temporarily unavailable"]}"#),
                Cause::ServerError,
            ),
            (answer(408, ""), Cause::Timeout),
            (Reply::TimedOut, Cause::Timeout),
            (Reply::Failed("connection reset".into()), Cause::Connection),
            (answer(200, "<html>proxy</html>"), Cause::Unreadable),
            (answer(200, "[]"), Cause::Unreadable),
        ] {
            match judge(&reply, 2, &policy(), 0.0) {
                Verdict::Retry {
                    after, cause: c, ..
                } => {
                    assert_eq!(c, cause, "{reply:?}");
                    assert_eq!(after, Duration::from_millis(100), "{reply:?}");
                    assert!(!c.pauses_everyone());
                }
                other => panic!("{reply:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_are_read_in_both_shapes() {
        let v: Value = serde_json::json!({"errors": ["a", "b"]});
        assert_eq!(errors_of(&v), ["a", "b"]);
        let v: Value = serde_json::json!({"errors": {"invalid_external_user_ids": ["x"], "n": 3}});
        assert_eq!(errors_of(&v), ["invalid_external_user_ids: x", "n: 3"]);
        let v: Value = serde_json::json!({"errors": [{"code": "bad"}]});
        assert_eq!(errors_of(&v), ["code: \"bad\""]);
        assert!(errors_of(&serde_json::json!({"id": "x"})).is_empty());
        let long = "x".repeat(1_000);
        match judge(&answer(400, &long), 1, &policy(), 0.0) {
            Verdict::Refused { reason, .. } => assert!(reason.chars().count() <= 301),
            other => panic!("{other:?}"),
        }
    }
}
