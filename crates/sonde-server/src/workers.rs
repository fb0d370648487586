//! On a query node of a cluster: keeps the list of distributed-SQL workers (the query nodes
//! whose member files are fresh and that run this build's plans, this one always included)
//! that the query planner spreads tasks over.

use crate::AppState;
use sonde_query::distributed::Peers;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Reads the member files every third of `--lease` (as often as nodes write them) until `stop`
/// resolves, and sets `peers` to the workers found. A reading that fails keeps the last list.
pub async fn follow(state: Arc<AppState>, peers: Peers, stop: impl std::future::Future<Output = ()>) {
    let every = (state.storage.config().lease / 3).max(Duration::from_millis(100));
    let own = sonde_query::distributed::plan_version();
    // Workers of another build, said once each (they announce themselves every heartbeat).
    let mut told: HashSet<String> = HashSet::new();
    tokio::pin!(stop);
    loop {
        match state.storage.query_workers().await {
            Ok(found) => {
                let mut urls: Vec<url::Url> = Vec::new();
                for w in found {
                    if w.plans != own {
                        if told.insert(w.url.clone()) {
                            tracing::warn!(worker = %w.url, theirs = %w.plans, ours = %own, "a query node of another build is left out of distributed queries: it would read their plans otherwise");
                        }
                        continue;
                    }
                    match url::Url::parse(&w.url) {
                        Ok(url) => urls.push(url),
                        Err(e) => {
                            tracing::warn!(url = %w.url, error = %e, "a member file names a worker address that is not a URL")
                        }
                    }
                }
                // This node's own worker, before its first member file is read back.
                urls.extend(state.engine.worker_url());
                peers.set(urls);
            }
            Err(e) => tracing::warn!(error = %e, "reading the query nodes' member files; keeping the last list"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
    }
}
