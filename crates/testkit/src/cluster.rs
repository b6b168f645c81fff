//! A three-node JetStream cluster on loopback, for tests that kill one node of a replicated
//! deployment and bring it back.
//!
//! Each node is a [`NatsServer`] of its own (its own client port, store directory and log) with
//! `--cluster` on a port of its own, `--routes` to all three, a shared cluster name and a
//! `server_name` per node, which clustered JetStream requires. Clients connect with
//! [`NatsCluster::urls`], the three URLs comma-separated.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::nats::{NatsOptions, NatsServer};
use crate::process::free_port;

/// How long the cluster may take to elect its JetStream meta leader (and a restarted node to
/// catch up) before a wait fails.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(30);

/// Three clustered `nats-server -js` processes, killed and deleted with the guard.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three nodes, named `n1`..`n3`, in the cluster `gavel-test`, and waits until every
    /// node reports healthy (a meta leader is elected and each node is current with it).
    pub async fn start() -> anyhow::Result<NatsCluster> {
        let cluster_ports = [free_port()?, free_port()?, free_port()?];
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let starts = cluster_ports.iter().enumerate().map(|(i, port)| {
            let args = vec![
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                routes.clone(),
                "--cluster_name".to_owned(),
                "gavel-test".to_owned(),
                "--server_name".to_owned(),
                format!("n{}", i + 1),
            ];
            NatsServer::start_with_args(NatsOptions::default(), args)
        });
        let nodes = futures_join_all(starts.collect()).await?;
        let cluster = NatsCluster { nodes };
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    /// The client URLs of all three nodes, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` (0..3), for its URL, pid or log.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Kills node `i` with SIGKILL; its store stays for [`NatsCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports with its store, and waits until the whole cluster is
    /// healthy again (the node has caught up with every replica it holds).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].restart().await?;
        self.wait_healthy().await
    }

    /// Starts node `i` again on its ports with its store, waiting only until it serves clients
    /// (not until the cluster is healthy: with two nodes down, one alone cannot catch up).
    pub async fn restart_only(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].restart().await
    }

    /// Waits until every running node's full `/healthz` answers 200.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let mut all = true;
            for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
                all &= node.healthy().await;
            }
            if all {
                return Ok(());
            }
            if started.elapsed() >= HEALTHY_DEADLINE {
                let logs = self
                    .nodes
                    .iter()
                    .map(|n| crate::process::log_tail(n.log_path()))
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                return Err(anyhow::anyhow!("logs:\n{logs}")).context(format!(
                    "the NATS cluster was not healthy within {HEALTHY_DEADLINE:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Awaits every start concurrently (all three must be up before any can form the cluster).
async fn futures_join_all<F>(starts: Vec<F>) -> anyhow::Result<Vec<NatsServer>>
where
    F: std::future::Future<Output = anyhow::Result<NatsServer>> + Send + 'static,
{
    let handles: Vec<_> = starts.into_iter().map(tokio::spawn).collect();
    let mut nodes = Vec::new();
    for h in handles {
        nodes.push(h.await.context("a node's start task")??);
    }
    Ok(nodes)
}
