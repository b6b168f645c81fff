//! One leading ticker at a time: a lease in a JetStream KV bucket whose entries expire after the
//! lease time (`max_age`). The leader renews with a compare-and-set on the revision it holds; a
//! standby keeps trying to create the key, which succeeds once the entry has expired or was
//! released. Hammers and opens carry deterministic message ids and expected versions, so two
//! tickers that briefly both lead cannot close or open a lot wrongly.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use std::time::Duration;

const KEY: &str = "leader";

/// The lease bucket (created with `ttl` as its entries' lifetime if missing).
pub async fn bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Duration,
) -> anyhow::Result<kv::Store> {
    match js.get_key_value(name).await {
        Ok(store) => Ok(store),
        Err(_) => Ok(js
            .create_key_value(kv::Config {
                bucket: name.into(),
                description: "Gavel ticker leader lease".into(),
                history: 1,
                max_age: ttl,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await?),
    }
}

/// This instance's claim on leadership.
pub struct Leader {
    kv: kv::Store,
    me: String,
    revision: Option<u64>,
}

impl Leader {
    pub fn new(kv: kv::Store, me: String) -> Self {
        Self {
            kv,
            me,
            revision: None,
        }
    }

    /// Becomes leader if nobody holds the lease.
    pub async fn try_acquire(&mut self) -> bool {
        match self.kv.create(KEY, Bytes::from(self.me.clone())).await {
            Ok(rev) => {
                self.revision = Some(rev);
                true
            }
            Err(_) => false,
        }
    }

    /// Extends the lease; false when it was lost (expired and taken, or unreachable).
    pub async fn renew(&mut self) -> bool {
        let Some(rev) = self.revision else {
            return false;
        };
        match self.kv.update(KEY, Bytes::from(self.me.clone()), rev).await {
            Ok(new) => {
                self.revision = Some(new);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "ticker lease lost");
                self.revision = None;
                false
            }
        }
    }

    /// Gives the lease up so a standby takes over at once.
    pub async fn release(&mut self) {
        if let Some(rev) = self.revision.take() {
            let _ = self.kv.delete_expect_revision(KEY, Some(rev)).await;
        }
    }

    /// Who holds the lease now, if anyone.
    pub async fn holder(&self) -> Option<String> {
        self.kv
            .get(KEY)
            .await
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}
