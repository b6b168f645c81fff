//! The one HTTP call: `POST <api_url>/notifications` with `Authorization: Key <key>` and a JSON
//! body, answered as a [`Reply`] for [`crate::answer::judge`]. No retries here.

use crate::answer::Reply;
use crate::OneSignal;
use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use serde_json::Value;
use std::time::Duration;

/// A client for one OneSignal app.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    auth: HeaderValue,
    app_id: String,
}

impl Client {
    /// A client sending to `<api_url>/notifications`, each request bounded by `timeout`.
    pub fn new(api_url: &str, creds: &OneSignal, timeout: Duration) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Key {}", creds.api_key.expose()))
            .map_err(|_| anyhow::anyhow!("ONESIGNAL_API_KEY is not a valid header value"))?;
        // Keeps the key out of any debug output of the request.
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect would turn the POST into a GET; treat it as a wrong URL instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gavel-notifier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            url: format!("{}/notifications", api_url.trim_end_matches('/')),
            auth,
            app_id: creds.app_id.clone(),
        })
    }

    /// The app the pushes go to.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Sends one notification body and reads the whole answer.
    pub async fn send(&self, body: &Value) -> Reply {
        let sent = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return failure(e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.text().await {
            Ok(body) => Reply::Answered {
                status,
                retry_after,
                body,
            },
            // The status came but the body did not: the answer is not whole, so it is not an
            // answer (a 200 cut short might still have said "not subscribed").
            Err(e) => failure(e),
        }
    }
}

fn failure(e: reqwest::Error) -> Reply {
    if e.is_timeout() {
        Reply::TimedOut
    } else {
        // The chain says "connection closed before message completed" and the like; the URL
        // carries no secret.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(": ");
            why.push_str(&s.to_string());
            source = s.source();
        }
        Reply::Failed(why)
    }
}
