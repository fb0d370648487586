//! On a query node of a cluster: keeps the list of distributed-SQL workers (the query nodes
//! whose member files are fresh, this one always included) that the query planner spreads
//! tasks over.

use crate::AppState;
use sonde_query::distributed::Peers;
use std::sync::Arc;
use std::time::Duration;

/// Reads the member files every third of `--lease` (as often as nodes write them) until `stop`
/// resolves, and sets `peers` to the workers found. A reading that fails keeps the last list.
pub async fn follow(state: Arc<AppState>, peers: Peers, stop: impl std::future::Future<Output = ()>) {
    let every = (state.storage.config().lease / 3).max(Duration::from_millis(100));
    tokio::pin!(stop);
    loop {
        match state.storage.query_workers().await {
            Ok(found) => {
                let mut urls: Vec<url::Url> = found
                    .iter()
                    .filter_map(|u| match url::Url::parse(u) {
                        Ok(url) => Some(url),
                        Err(e) => {
                            tracing::warn!(url = %u, error = %e, "a member file names a worker address that is not a URL");
                            None
                        }
                    })
                    .collect();
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
