//! SQL across the query nodes of a cluster, on datafusion-distributed.
//!
//! Every query node runs a datafusion-distributed `Worker` (served beside OTLP/gRPC) and can
//! coordinate: a SQL query's physical plan is cut into stages at its shuffles, and each stage's
//! Parquet scan is split into tasks of about `bytes_per_partition` bytes, spread over the live
//! workers ([`Peers`], which the server refreshes from the query nodes' member files). The
//! segments are read by every worker from the shared bucket through its own chunk and footer
//! caches; the fresh rows copied from ingest nodes travel inside the plan.
//!
//! What stays on the node that was asked, and why:
//! - Query specs, BubbleUp and traces: their answers are built from several small queries
//!   whose latency a network hop would dominate, and they use the per-segment partials cache.
//! - SQL over a dataset with derived columns: a derived column is a function whose name
//!   carries its parameters, and datafusion-distributed sends functions by name only, so a
//!   worker could not rebuild it.
//!
//! Each worker checks `--cluster-key` on every request (plans can read every dataset), and
//! each task runs under the worker's own per-query memory cap inside its process budget, with
//! spilling off, as local queries do.

use crate::memory::{BudgetedPool, MemoryBudget};
use crate::udaf::{weighted_percentile, weighted_percentiles};
use async_trait::async_trait;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::grpc::DefaultChannelResolver;
use datafusion_distributed::{
    ChannelResolver, DistributedExt, NetworkBoundaryExt, SessionStateBuilderExt, Worker, WorkerChannel,
    WorkerQueryContext, WorkerResolver,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use url::Url;

/// The header every worker request carries the cluster key in.
const KEY_HEADER: &str = "x-sonde-cluster-key";

/// How this node takes part in distributed SQL.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where the other query nodes reach this node's worker (its gRPC address).
    pub self_url: Url,
    /// `--cluster-key`: every worker request must carry it (none: the workers trust the
    /// network, as the internal HTTP endpoints do).
    pub key: Option<String>,
    /// A Parquet scan is split into tasks of about this many bytes
    /// (`--distributed-bytes-per-partition`): a stage runs one task per `target_partitions` such
    /// partitions, and a smaller scan runs in one task, on this node.
    pub bytes_per_partition: usize,
    /// Largest plan or batch message a worker accepts, in bytes.
    pub max_message_bytes: usize,
}

/// The workers a query may use, this node's included: set by the server from the member
/// files (a dead node drops out after `--lease`), read by the planner on every query.
#[derive(Debug, Clone, Default)]
pub struct Peers(Arc<RwLock<Vec<Url>>>);

impl Peers {
    /// Replaces the list.
    pub fn set(&self, mut urls: Vec<Url>) {
        urls.sort();
        urls.dedup();
        *self.0.write().expect("peers lock") = urls;
    }

    /// The list now.
    pub fn get(&self) -> Vec<Url> {
        self.0.read().expect("peers lock").clone()
    }
}

impl WorkerResolver for Peers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.get())
    }
}

/// This node's part of the cluster: its worker, its view of the others, and the connections
/// to them (one set, reused by every query).
pub(crate) struct Cluster {
    pub(crate) config: ClusterConfig,
    pub(crate) peers: Peers,
    worker: Worker,
    channels: DefaultChannelResolver,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// What a distributed query used, for the answer's `meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Distribution {
    /// Distinct workers that ran a task, this node's included.
    pub workers: usize,
    /// Stages of the plan (the coordinator's own included).
    pub stages: usize,
    /// Tasks over all stages.
    pub tasks: usize,
    /// Why the distributed run failed, when the query was run again on this node alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_alone: Option<String>,
}

/// A query's runtime: the per-query cap inside the process budget, no spilling, and the
/// engine's object stores and footer cache (a worker rebuilds the Parquet reader from these).
pub(crate) fn query_runtime(
    shared: &RuntimeEnv,
    limit: usize,
    budget: &Arc<MemoryBudget>,
) -> Result<Arc<RuntimeEnv>, DataFusionError> {
    Ok(Arc::new(RuntimeEnv {
        memory_pool: Arc::new(BudgetedPool::new(limit, budget.clone())),
        // No spilling: a query over its cap fails with a clear error instead of filling the
        // disk the WAL and segments live on.
        disk_manager: Arc::new(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Disabled)
                .build()?,
        ),
        cache_manager: shared.cache_manager.clone(),
        object_store_registry: shared.object_store_registry.clone(),
    }))
}

/// Registers the aggregate functions Sonde's SQL adds, under the names plans carry them by.
pub(crate) fn register_functions(state: &mut SessionState) -> Result<(), DataFusionError> {
    state.register_udaf(Arc::new(weighted_percentile()))?;
    state.register_udaf(Arc::new(weighted_percentiles()))?;
    Ok(())
}

fn key_headers(key: &Option<String>) -> Result<http::HeaderMap, DataFusionError> {
    let mut headers = http::HeaderMap::new();
    if let Some(k) = key {
        let v = http::HeaderValue::from_str(k)
            .map_err(|_| DataFusionError::Configuration("--cluster-key is not a valid header value".into()))?;
        headers.insert(KEY_HEADER, v);
    }
    Ok(headers)
}

impl Cluster {
    /// This node's worker, running tasks with `shared`'s stores and caches under `limit` per
    /// query inside `budget`.
    pub(crate) fn new(
        config: ClusterConfig,
        shared: Arc<RuntimeEnv>,
        limit: usize,
        budget: Arc<MemoryBudget>,
    ) -> Result<Cluster, DataFusionError> {
        let channels = DefaultChannelResolver::default();
        let headers = key_headers(&config.key)?;
        let (ch, key) = (channels.clone(), config.key.clone());
        let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
            let (shared, budget, ch, headers, key) =
                (shared.clone(), budget.clone(), ch.clone(), headers.clone(), key.clone());
            async move {
                // A plan reads every dataset: refuse one without the cluster's key (the gRPC
                // layer checks it too; this also covers the in-process worker).
                if let Some(k) = &key
                    && ctx.headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()) != Some(k.as_str())
                {
                    return Err(DataFusionError::Execution(
                        "refused: the request does not carry this cluster's --cluster-key".into(),
                    ));
                }
                let mut state = ctx
                    .builder
                    .with_runtime_env(query_runtime(&shared, limit, &budget)?)
                    .with_distributed_channel_resolver(ch)
                    // Tasks that read other tasks' output pass the key on.
                    .with_distributed_passthrough_headers(headers)?
                    .build();
                register_functions(&mut state)?;
                Ok(state)
            }
        });
        let peers = Peers::default();
        peers.set(vec![config.self_url.clone()]);
        Ok(Cluster {
            config,
            peers,
            worker,
            channels,
        })
    }

    /// The gRPC service other query nodes send tasks to, checking the cluster key.
    pub(crate) fn routes(&self) -> tonic::service::Routes {
        let key = self.config.key.clone();
        let check = move |req: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
            match &key {
                Some(k) if req.metadata().get(KEY_HEADER).and_then(|v| v.to_str().ok()) != Some(k.as_str()) => Err(
                    tonic::Status::unauthenticated("this worker needs the cluster's --cluster-key"),
                ),
                _ => Ok(req),
            }
        };
        let server = self
            .worker
            .clone()
            .into_worker_server()
            .max_decoding_message_size(self.config.max_message_bytes);
        tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(server, check))
    }

    /// A coordinating session for one query: `config` and `runtime` as a local query's, plus the
    /// distributed planner over the live workers. The returned recorder names the remote
    /// workers the query reached.
    pub(crate) fn session(
        &self,
        config: SessionConfig,
        runtime: Arc<RuntimeEnv>,
    ) -> Result<(SessionState, Recorder), DataFusionError> {
        let recorder = Recorder {
            inner: self.channels.clone(),
            seen: Arc::default(),
        };
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_distributed_worker_resolver(self.peers.clone())
            .with_distributed_channel_resolver(recorder.clone())
            .with_distributed_local_worker_context(self.worker.to_local_worker_context(self.config.self_url.clone()))
            .with_distributed_file_scan_config_bytes_per_partition(self.config.bytes_per_partition.max(1))?
            .with_distributed_passthrough_headers(key_headers(&self.config.key)?)?
            .with_distributed_planner()
            .build();
        register_functions(&mut state)?;
        Ok((state, recorder))
    }
}

/// Passes connections through to the shared resolver, noting which workers a query reached.
#[derive(Clone)]
pub(crate) struct Recorder {
    inner: DefaultChannelResolver,
    seen: Arc<Mutex<BTreeSet<Url>>>,
}

#[async_trait]
impl ChannelResolver for Recorder {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        self.seen.lock().expect("recorder lock").insert(url.clone());
        self.inner.get_worker_client_for_url(url).await
    }
}

impl Recorder {
    /// What `plan` used (once run; before, the workers are only this node).
    pub(crate) fn distribution(&self, plan: &Arc<dyn ExecutionPlan>, self_url: &Url) -> Distribution {
        let (mut stages, mut tasks) = (1, 1);
        let _ = plan.apply(|p| {
            if let Some(b) = p.as_network_boundary() {
                stages += 1;
                tasks += b.input_stage().task_count();
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let mut workers = self.seen.lock().expect("recorder lock").clone();
        // The coordinator runs its own stage, and the tasks it routes to itself.
        workers.insert(self_url.clone());
        Distribution {
            workers: workers.len(),
            stages,
            tasks,
            retried_alone: None,
        }
    }
}

/// The distributed plan as text, each stage with its tasks (what `EXPLAIN` answers).
pub(crate) fn explain(plan: &Arc<dyn ExecutionPlan>) -> String {
    datafusion_distributed::display_plan_ascii(plan.as_ref(), false)
}
