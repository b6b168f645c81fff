//! Accounts and tokens over real HTTP: register, login, me, every documented error; forged,
//! expired and `alg: none` tokens; the per-address limit; routing errors in the protocol's shape.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn register_login_me_and_every_documented_error() {
    let edge = Edge::start().await;
    let reg = edge
        .post(
            "/api/auth/register",
            None,
            json!({"email": "Ann@Example.com", "password": PASSWORD, "name": "Ann"}),
        )
        .await;
    assert_eq!(reg.0, StatusCode::CREATED, "{}", reg.1);
    assert_eq!(reg.1["email"], "ann@example.com");
    assert_eq!(reg.1["name"], "Ann");
    assert_eq!(reg.1["role"], "buyer");
    assert_eq!(reg.1["verified"], false);
    assert!(reg.1.get("password_hash").is_none() && reg.1.get("password").is_none());
    let id = reg.1["id"].as_str().unwrap().to_owned();

    // 409: the email is in use, whatever its case.
    let again = edge
        .post(
            "/api/auth/register",
            None,
            json!({"email": "ANN@example.com", "password": PASSWORD, "name": "Ann 2"}),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");

    // 400: malformed email, password, name, body.
    for body in [
        json!({"email": "not-an-email", "password": PASSWORD, "name": "B"}),
        json!({"email": "b@example", "password": PASSWORD, "name": "B"}),
        json!({"email": "b@example.com", "password": "short", "name": "B"}),
        json!({"email": "b@example.com", "password": "x".repeat(129), "name": "B"}),
        json!({"email": "b@example.com", "password": PASSWORD, "name": "  "}),
        json!({"email": "b@example.com", "password": PASSWORD}),
        json!({"email": 42, "password": PASSWORD, "name": "B"}),
        json!([1, 2, 3]),
    ] {
        let r = edge.post("/api/auth/register", None, body.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid");
    }
    let raw = edge
        .http
        .post(edge.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid");
    // 128 characters is still a password.
    let long = edge
        .post(
            "/api/auth/register",
            None,
            json!({"email": "long@example.com", "password": "é".repeat(128), "name": "Long"}),
        )
        .await;
    assert_eq!(long.0, StatusCode::CREATED, "{}", long.1);

    // Login: a wrong password or an unknown email are the same 401.
    for body in [
        json!({"email": "ann@example.com", "password": "wrong password"}),
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    ] {
        let r = edge.post("/api/auth/login", None, body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let r = edge
        .post("/api/auth/login", None, json!({"email": "ann@example.com"}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid");

    let login = edge
        .post(
            "/api/auth/login",
            None,
            json!({"email": "ANN@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.0, StatusCode::OK, "{}", login.1);
    assert_eq!(login.1["user"]["id"], id.as_str());
    assert!(login.1["expires_at"].as_i64().unwrap() > schemas::now_ms());
    let token = login.1["token"].as_str().unwrap();

    let me = edge.get("/api/me", Some(token)).await;
    assert_eq!(me.0, StatusCode::OK, "{}", me.1);
    assert_eq!(me.1["id"], id.as_str());
    assert_eq!(me.1["verified"], false);
    // Verified by an admin: /api/me says so with the same token.
    store::users::set_verified(edge.pool(), id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(edge.get("/api/me", Some(token)).await.1["verified"], true);

    assert_error(
        &edge.get("/api/me", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // A token without `Bearer` is not a bearer token.
    let r = edge
        .http
        .get(edge.url("/api/me"))
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Nothing else was created.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(edge.pool())
        .await
        .unwrap();
    assert_eq!(users, 2);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_protocols_shape() {
    let edge = Edge::start().await;
    assert_error(
        &edge.get("/api/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // `/` is the web client; a path beside it is not.
    assert_error(
        &edge.get("/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &edge.call(Method::DELETE, "/api/me", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_error(
        &edge.get("/api/auth/login", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // A malformed id names nothing.
    assert_error(
        &edge.get("/api/events/not-a-uuid", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // An oversized body is refused before it is read.
    let big = json!({"email": "a@b.co", "password": "x".repeat(70_000), "name": "A"});
    let r = edge.post("/api/auth/register", None, big).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
}

/// A tiny base64url (no padding) for hand-made tokens.
fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_refused() {
    let edge = Edge::start().await;
    let (admin, good) = edge.user("boss@example.com", true, true).await;
    assert_eq!(
        edge.get("/api/admin/users", Some(&good)).await.0,
        StatusCode::OK
    );

    let now = schemas::now_ms() as u64 / 1000;
    let claims = |exp: u64| edge::auth::Claims {
        sub: admin,
        role: edge::auth::Role::Admin,
        iat: now,
        exp,
    };
    let sign = |alg, secret: &str, exp| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims(exp),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let forged = sign(
        jsonwebtoken::Algorithm::HS256,
        "somebody else's secret, thirty-two bytes long",
        now + 3600,
    );
    let expired = sign(jsonwebtoken::Algorithm::HS256, SECRET, now - 3600);
    let other_alg = sign(jsonwebtoken::Algorithm::HS512, SECRET, now + 3600);
    let body = serde_json::to_vec(&claims(now + 3600)).unwrap();
    let unsigned = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(&body));
    // The good token's claims with a changed role and the original signature.
    let mut parts = good.split('.');
    let (_, _, sig) = (parts.next(), parts.next(), parts.next().unwrap());
    let tampered = format!(
        "{}.{}.{}",
        b64(br#"{"typ":"JWT","alg":"HS256"}"#),
        b64(&serde_json::to_vec(&claims(now + 7200)).unwrap()),
        sig
    );
    for (what, token) in [
        ("forged", forged.as_str()),
        ("expired", expired.as_str()),
        ("HS512", other_alg.as_str()),
        ("alg none", unsigned.as_str()),
        ("tampered", tampered.as_str()),
        ("garbage", "not.a.token"),
    ] {
        for path in ["/api/me", "/api/admin/users"] {
            let r = edge.get(path, Some(token)).await;
            assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{what} on {path}: {}", r.1);
            assert_eq!(r.1["error"]["code"], "unauthorized", "{what}");
        }
    }
    // A bad token on a public route is refused too, rather than silently ignored.
    assert_eq!(
        edge.get(
            "/api/events/00000000-0000-0000-0000-000000000000",
            Some(&forged)
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_and_register_are_limited_per_address() {
    let edge = Edge::start_with(|c| c.auth_rate = 3).await;
    let wrong = json!({"email": "x@example.com", "password": "wrong password"});
    for _ in 0..2 {
        let r = edge.post("/api/auth/login", None, wrong.clone()).await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    }
    // Register draws on the same allowance.
    let r = edge
        .post(
            "/api/auth/register",
            None,
            json!({"email": "x@example.com", "password": PASSWORD, "name": "X"}),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    let limited = edge.post("/api/auth/login", None, wrong.clone()).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let limited = edge
        .post(
            "/api/auth/register",
            None,
            json!({"email": "y@example.com", "password": PASSWORD, "name": "Y"}),
        )
        .await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // A limited register created nothing.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(edge.pool())
        .await
        .unwrap();
    assert_eq!(users, 1);

    // Another address has its own allowance.
    let other = client_from(Some("127.0.0.2".parse().unwrap()));
    let r = call_with(
        &other,
        &edge,
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": "x@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    // Other routes are not limited by it.
    assert_eq!(edge.get("/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn no_limit_when_the_rate_is_zero() {
    let edge = Edge::start_with(|c| c.auth_rate = 0).await;
    for _ in 0..40 {
        let r = edge
            .post(
                "/api/auth/login",
                None,
                json!({"email": "x@example.com", "password": "wrong password"}),
            )
            .await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    }
}
