//! Users: buyers and admins, with argon2id password hashes.

use crate::StoreError;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use schemas::UserId;
use sqlx::PgPool;

/// A user as every API shows it (never the hash).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub verified: bool,
}

/// Hashes a password with argon2id and a random salt. CPU-heavy: call it off the async runtime
/// (`spawn_blocking`).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Internal(e.to_string().into()))
}

/// Checks a password against a stored hash; a malformed hash never verifies.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Creates a user. An email in use is `Conflict("users_email_key")`.
pub async fn create_user(
    pool: &PgPool,
    email: &str,
    password_hash: &str,
    name: &str,
    admin: bool,
    verified: bool,
) -> Result<User, StoreError> {
    let user = sqlx::query_as::<_, User>(
        "INSERT INTO users (id, email, password_hash, name, role, verified)
         VALUES ($1, lower($2), $3, $4, $5, $6)
         RETURNING id, email, name, role, verified",
    )
    .bind(UserId::new().uuid())
    .bind(email)
    .bind(password_hash)
    .bind(name)
    .bind(if admin { "admin" } else { "buyer" })
    .bind(verified)
    .fetch_one(pool)
    .await?;
    Ok(user)
}

/// Marks a buyer verified (the gate before the first bid).
pub async fn set_verified(pool: &PgPool, id: UserId) -> Result<User, StoreError> {
    let user = sqlx::query_as::<_, User>(
        "UPDATE users SET verified = true WHERE id = $1 RETURNING id, email, name, role, verified",
    )
    .bind(id.uuid())
    .fetch_one(pool)
    .await?;
    Ok(user)
}

/// The user and password hash for a login.
pub async fn user_by_email(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(User, String)>, StoreError> {
    let row = sqlx::query_as::<_, (uuid::Uuid, String, String, String, bool, String)>(
        "SELECT id, email, name, role, verified, password_hash FROM users WHERE email = lower($1)",
    )
    .bind(email)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, email, name, role, verified, hash)| {
        (
            User {
                id,
                email,
                name,
                role,
                verified,
            },
            hash,
        )
    }))
}

/// The user with this id.
pub async fn user_by_id(pool: &PgPool, id: UserId) -> Result<Option<User>, StoreError> {
    let user = sqlx::query_as::<_, User>(
        "SELECT id, email, name, role, verified FROM users WHERE id = $1",
    )
    .bind(id.uuid())
    .fetch_optional(pool)
    .await?;
    Ok(user)
}

/// Users, oldest first; only those with this `verified` flag when given (the admin's queue of
/// buyers awaiting verification is `Some(false)`).
pub async fn list_users(pool: &PgPool, verified: Option<bool>) -> Result<Vec<User>, StoreError> {
    let users = sqlx::query_as::<_, User>(
        "SELECT id, email, name, role, verified FROM users
          WHERE $1::boolean IS NULL OR verified = $1
          ORDER BY created_at, id",
    )
    .bind(verified)
    .fetch_all(pool)
    .await?;
    Ok(users)
}
