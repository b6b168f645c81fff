//! Who is calling: access tokens (HS256 JWTs), the rules for a new account, and the per-address
//! limit on login and register.
//!
//! A token names the user (`sub`) and their role, with `iat` and `exp` in seconds. Only HS256
//! with our secret verifies: a token signed with another key, with another algorithm or with
//! `alg: none`, or past its `exp`, is refused as 401 `unauthorized`.

use crate::error::ApiErr;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemas::UserId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A secret that never prints (Debug and Display show `***`).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user's role, as tokens and users carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Buyer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "buyer" => Some(Role::Buyer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: uuid::Uuid,
    pub role: Role,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// The verified caller of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub role: Role,
}

/// Issues and verifies access tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Tokens {
    pub fn new(secret: &Secret, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A little slack for clocks between edges; tokens live for hours.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            ttl,
        }
    }

    /// A token for `user`, and when it expires (ms since the epoch).
    pub fn issue(&self, user: UserId, role: Role) -> Result<(String, i64), ApiErr> {
        let iat = (schemas::now_ms() / 1000) as u64;
        let exp = iat + self.ttl.as_secs().max(1);
        let claims = Claims {
            sub: user.uuid(),
            role,
            iat,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiErr::Internal(e.into()))?;
        Ok((token, exp as i64 * 1000))
    }

    /// The caller named by a valid token.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiErr> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "token refused");
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        ApiErr::Unauthorized("the token has expired; log in again")
                    }
                    _ => ApiErr::Unauthorized("the token is not valid"),
                }
            })?;
        Ok(Caller {
            user: UserId(data.claims.sub),
            role: data.claims.role,
        })
    }

    /// The caller of a request from its `Authorization` header (`Bearer <token>`).
    pub fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiErr> {
        let Some(header) = authorization else {
            return Err(ApiErr::Unauthorized(
                "this needs a token: Authorization: Bearer <token>",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiErr::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        self.verify(token)
    }

    /// The caller if the request carries a token; a bad token is still refused.
    pub fn optional_caller(&self, authorization: Option<&str>) -> Result<Option<Caller>, ApiErr> {
        authorization.map(|h| self.caller(Some(h))).transpose()
    }

    /// An admin caller: 401 without a valid token, 403 for anyone else.
    pub fn admin(&self, authorization: Option<&str>) -> Result<Caller, ApiErr> {
        let caller = self.caller(authorization)?;
        if caller.role != Role::Admin {
            return Err(ApiErr::Forbidden("this needs an admin"));
        }
        Ok(caller)
    }
}

/// Shortest and longest password, in characters (PROTOCOL.md).
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// Checks an email's shape and returns it lowercased: one `@`, something before it, a dotted
/// domain after it, no spaces, at most 254 characters. Deliverability is the verifier's job.
pub fn check_email(email: &str) -> Result<String, ApiErr> {
    let email = email.trim();
    let bad = || ApiErr::Invalid("email is not an email address".into());
    if email.is_empty() || email.chars().count() > 254 || email.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok(email.to_lowercase())
}

/// A password of 8 to 128 characters.
pub fn check_password(password: &str) -> Result<(), ApiErr> {
    if PASSWORD_CHARS.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiErr::Invalid(format!(
            "password must be {} to {} characters",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        )))
    }
}

/// A display name of 1 to 100 characters (trimmed).
pub fn check_name(name: &str) -> Result<String, ApiErr> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiErr::Invalid("name must be 1 to 100 characters".into()));
    }
    Ok(name.to_owned())
}

/// Login and register calls per minute per client address (`GAVEL_AUTH_RATE`): a burst of as
/// many, refilled over the minute. `None` when the rate is 0 (off).
pub struct AuthLimiter(DefaultKeyedRateLimiter<IpAddr>);

impl AuthLimiter {
    pub fn new(per_minute: u32) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Self(RateLimiter::keyed(Quota::per_minute(n))))
    }

    /// Takes one call from `addr`'s allowance, or refuses it.
    pub fn check(&self, addr: IpAddr) -> Result<(), ApiErr> {
        self.0.check_key(&addr).map_err(|_| ApiErr::RateLimited)
    }

    /// Forgets addresses whose allowance is full again, so the table stays small.
    pub fn forget_idle(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

/// Password hashing (argon2: tens of ms of CPU and 19 MiB each) off the async workers and at
/// most `n` at a time across every address: a login storm queues here instead of taking every
/// core from the bids. A call that cannot start within `max_wait` is refused 503.
pub struct HashGate {
    permits: Arc<Semaphore>,
    max_wait: Duration,
}

impl HashGate {
    pub fn new(n: usize, max_wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(n.max(1))),
            max_wait,
        }
    }

    /// Half the machine's cores (at least one), waiting at most 10 s.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores / 2, Duration::from_secs(10))
    }

    /// Runs `f` on the blocking pool once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiErr> {
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                ApiErr::Unavailable("too many logins at once; retry in a few seconds".into())
            })?
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| ApiErr::Internal(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_hashes_run_at_most_n_at_a_time() {
        let gate = Arc::new(HashGate::new(2, Duration::from_secs(10)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                gate.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            })
        });
        for c in futures::future::join_all(calls).await {
            c.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_hash_that_cannot_start_in_time_is_refused_503() {
        let gate = Arc::new(HashGate::new(1, Duration::from_millis(50)));
        let busy = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run(|| std::thread::sleep(Duration::from_millis(400)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = gate.run(|| ()).await;
        assert!(
            matches!(refused, Err(ApiErr::Unavailable(_))),
            "{refused:?}"
        );
        busy.await.unwrap().unwrap();
        assert!(gate.run(|| ()).await.is_ok(), "free again once it is done");
    }

    fn tokens() -> Tokens {
        Tokens::new(
            &Secret::new("a test secret of at least thirty-two bytes"),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[test]
    fn a_token_round_trips_and_a_forged_one_does_not() {
        let t = tokens();
        let user = UserId::new();
        let (token, exp) = t.issue(user, Role::Admin).unwrap();
        assert!(exp > schemas::now_ms());
        assert_eq!(
            t.caller(Some(&format!("Bearer {token}"))).unwrap(),
            Caller {
                user,
                role: Role::Admin
            }
        );
        let other = Tokens::new(
            &Secret::new("another secret of at least thirty-two bytes"),
            Duration::from_secs(3600),
        );
        assert!(matches!(other.verify(&token), Err(ApiErr::Unauthorized(_))));
        assert!(matches!(t.caller(None), Err(ApiErr::Unauthorized(_))));
        assert!(matches!(
            t.caller(Some(&token)),
            Err(ApiErr::Unauthorized(_))
        ));
    }

    #[test]
    fn admin_needs_the_admin_role() {
        let t = tokens();
        let (token, _) = t.issue(UserId::new(), Role::Buyer).unwrap();
        assert!(matches!(
            t.admin(Some(&format!("Bearer {token}"))),
            Err(ApiErr::Forbidden(_))
        ));
    }

    #[test]
    fn account_rules() {
        assert_eq!(check_email(" Ann@Example.COM ").unwrap(), "ann@example.com");
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "ann@@example.com",
            "a nn@example.com",
            "ann@.example.com",
            "ann@example..com",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(128)).is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
        // Characters, not bytes.
        assert!(check_password("ééééééé").is_err());
        assert!(check_name("  ").is_err());
        assert_eq!(check_name(" Ann ").unwrap(), "Ann");
    }

    #[test]
    fn the_limiter_allows_a_burst_per_address_and_zero_turns_it_off() {
        assert!(AuthLimiter::new(0).is_none());
        let l = AuthLimiter::new(3).unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.check(a).unwrap();
        }
        assert!(matches!(l.check(a), Err(ApiErr::RateLimited)));
        l.check(b).unwrap();
    }
}
