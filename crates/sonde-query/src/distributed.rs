//! SQL and query specifications across the query nodes of a cluster, on datafusion-distributed.
//!
//! Every query node runs a datafusion-distributed `Worker` (served beside OTLP/gRPC) and can
//! coordinate: a query's physical plan (a SQL query's, or one of the aggregates a query
//! specification runs) is cut into stages at its shuffles, and each stage's
//! Parquet scan is split into tasks of about `bytes_per_partition` bytes, spread over the live
//! workers ([`Peers`], which the server refreshes from the query nodes' member files). The
//! segments are read by every worker from the shared bucket through its own chunk and footer
//! caches; the fresh rows copied from ingest nodes travel as their position in those copies
//! ([`crate::buffer_scan`]), and each worker reads them from its own.
//!
//! What stays on the node that was asked, and why:
//! - Raw events and traces: a few small lookups each, whose latency a network hop would
//!   dominate; and the precomputed per-segment partials, which each node caches itself.
//! - A plan that reads a sample (BubbleUp): the sample's Parquet row selection does not
//!   survive the plan's serialisation ([`portable`]).
//! - A plan that calls a function a worker cannot find by name ([`portable`]):
//!   datafusion-distributed sends functions by name only. Sonde's own (its aggregates, sketches
//!   and derived-column kernels) are registered on every worker by [`register_functions`].
//!
//! Each worker checks `--cluster-key` on every request (plans can read every dataset), and
//! each task runs under the worker's own per-query memory cap inside its process budget, with
//! spilling off, as local queries do.

use crate::buffer_scan::{BufferScanCodec, BufferScanExec, FreshReader};
use crate::memory::{BudgetedPool, MemoryBudget};
use crate::table::DatasetTable;
use crate::udaf::{weighted_percentile, weighted_percentiles};
use async_trait::async_trait;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan, WindowFunctionDefinition};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::grpc::DefaultChannelResolver;
use datafusion_distributed::{
    ChannelResolver, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DesiredTaskCountHandler, DistributedExt,
    DistributedLeafExec, NetworkBoundaryExt, RouteTasksEvent, RouteTasksEventResponse, RouteTasksHandler,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, Worker, WorkerChannel,
    WorkerQueryContext, WorkerResolver,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
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
    /// How long a worker found unreachable after a failed query is left out: until a dead
    /// node's member file has gone stale (`--lease`) and the list has been read again.
    pub leave_out_for: Duration,
}

/// How long a worker has to accept a connection when a failed query asks whether it is alive.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// When every worker accepted the first probe after a failed query, how long until the second.
const PROBE_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// The workers a query may use, this node's included: set by the server from the member
/// files (a dead node drops out after `--lease`), read by the planner on every query. A worker
/// found unreachable after a failed query is left out at once, for `leave_out_for`.
#[derive(Debug, Clone, Default)]
pub struct Peers(Arc<RwLock<PeerList>>);

#[derive(Debug, Default)]
struct PeerList {
    urls: Vec<Url>,
    /// Workers that could not be reached, and until when they are left out.
    left_out: HashMap<Url, Instant>,
}

impl Peers {
    /// Replaces the list.
    pub fn set(&self, mut urls: Vec<Url>) {
        urls.sort();
        urls.dedup();
        let mut list = self.0.write().expect("peers lock");
        let now = Instant::now();
        list.left_out.retain(|_, until| *until > now);
        list.urls = urls;
    }

    /// The list now, less the workers left out.
    pub fn get(&self) -> Vec<Url> {
        let list = self.0.read().expect("peers lock");
        let now = Instant::now();
        list.urls
            .iter()
            .filter(|u| list.left_out.get(*u).is_none_or(|until| *until <= now))
            .cloned()
            .collect()
    }

    fn leave_out(&self, url: Url, until: Instant) {
        self.0.write().expect("peers lock").left_out.insert(url, until);
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
    /// Queries run across the workers, and those run again after a failure.
    pub(crate) counts: DistributedCounts,
    worker: Worker,
    channels: DefaultChannelResolver,
    /// Encodes fresh-row scans as positions, and reads them back on this node.
    codec: BufferScanCodec,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// Counters of distributed queries on this node, for `/metrics`.
#[derive(Debug, Default)]
pub struct DistributedCounts {
    /// Queries this node coordinated across the workers: SQL, and each aggregate query of a
    /// query specification.
    pub queries: std::sync::atomic::AtomicU64,
    /// Of those, the ones that failed there and were run again on this node alone.
    pub retried_alone: std::sync::atomic::AtomicU64,
    /// Of those, the ones that failed there and were run again over the workers still reachable.
    pub retried_on_workers: std::sync::atomic::AtomicU64,
}

/// A reading of [`DistributedCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DistributedTotals {
    /// Queries coordinated across the workers.
    pub queries: u64,
    /// Of those, run again on this node alone.
    pub retried_alone: u64,
    /// Of those, run again over the workers still reachable.
    pub retried_on_workers: u64,
}

impl DistributedCounts {
    /// The counts now.
    pub fn totals(&self) -> DistributedTotals {
        use std::sync::atomic::Ordering::Relaxed;
        DistributedTotals {
            queries: self.queries.load(Relaxed),
            retried_alone: self.retried_alone.load(Relaxed),
            retried_on_workers: self.retried_on_workers.load(Relaxed),
        }
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
    /// Why the distributed run failed, when the query was run again over the workers still
    /// reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried: Option<String>,
    /// The workers found unreachable after that failure, left out of the second run and of
    /// the next queries (for `leave_out_for`: `--lease` and a third).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

impl Distribution {
    /// Adds `other`, a later part of the same answer (a query specification runs several
    /// queries): the most workers any part used, the stages and tasks of all, the first retry.
    pub fn merge(&mut self, other: Distribution) {
        self.workers = self.workers.max(other.workers);
        self.stages += other.stages;
        self.tasks += other.tasks;
        if self.retried_alone.is_none() {
            self.retried_alone = other.retried_alone;
        }
        if self.retried.is_none() {
            self.retried = other.retried;
        }
        for w in other.left_out {
            if !self.left_out.contains(&w) {
                self.left_out.push(w);
            }
        }
    }

    /// `a` merged with `b`, either of which may be missing.
    pub fn merged(a: Option<Distribution>, b: Option<Distribution>) -> Option<Distribution> {
        match (a, b) {
            (Some(mut a), Some(b)) => {
                a.merge(b);
                Some(a)
            }
            (a, b) => a.or(b),
        }
    }
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

/// Registers the functions Sonde's SQL adds (its aggregates and the derived-column kernels),
/// under the names plans carry them by.
pub(crate) fn register_functions(state: &mut SessionState) -> Result<(), DataFusionError> {
    state.register_udaf(Arc::new(weighted_percentile()))?;
    state.register_udaf(Arc::new(weighted_percentiles()))?;
    state.register_udaf(Arc::new(crate::sketch::sketch()))?;
    state.register_udaf(Arc::new(crate::sketch::sketch_merge()))?;
    state.register_udf(Arc::new(crate::sketch::sketch_quantile()))?;
    state.register_udaf(Arc::new(crate::distinct::distinct()))?;
    state.register_udaf(Arc::new(crate::distinct::distinct_merge()))?;
    state.register_udf(Arc::new(crate::distinct::distinct_count()))?;
    for kernel in crate::derived::kernels() {
        state.register_udf(kernel.clone())?;
    }
    Ok(())
}

/// Which plans this build's worker runs, announced in its member file so that a coordinator
/// sends tasks only to workers that read them as it does: the crate's and DataFusion's
/// versions, the version of Sonde's own plan nodes (`BufferScanExec`'s encoding), and a
/// fingerprint of every function name a plan may carry (a worker of another build lacking one
/// of them would refuse the plan, and each query would pay for a failed run first).
pub fn plan_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let mut state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .build();
        let mut names: Vec<String> = match register_functions(&mut state) {
            Ok(()) => state
                .scalar_functions()
                .keys()
                .map(|n| format!("f:{n}"))
                .chain(state.aggregate_functions().keys().map(|n| format!("a:{n}")))
                .chain(state.window_functions().keys().map(|n| format!("w:{n}")))
                .collect(),
            // Unreachable in practice (the same registration runs for every query); a version
            // no other node has keeps this worker to itself.
            Err(e) => vec![format!("unregistered: {e}")],
        };
        names.sort();
        let fingerprint = sonde_model::fnv1a(names.iter().flat_map(|n| n.bytes().chain([0])));
        format!(
            "sonde-query {}, datafusion {}, plan nodes {}, functions {fingerprint:016x}",
            env!("CARGO_PKG_VERSION"),
            datafusion::DATAFUSION_VERSION,
            crate::buffer_scan::ENCODING_VERSION,
        )
    })
}

/// Whether `headers` carry `key`, compared in constant time (a key guessed byte by byte from
/// response times is a key that reads every dataset).
fn carries_key(headers: &http::HeaderMap, key: &str) -> bool {
    let Some(given) = headers.get(KEY_HEADER) else {
        return false;
    };
    let (given, key) = (given.as_bytes(), key.as_bytes());
    given.len() == key.len() && given.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
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
        fresh: Arc<dyn FreshReader>,
    ) -> Result<Cluster, DataFusionError> {
        let channels = DefaultChannelResolver::default();
        let headers = key_headers(&config.key)?;
        let (ch, key) = (channels.clone(), config.key.clone());
        let codec = BufferScanCodec::new(fresh);
        let worker_codec = codec.clone();
        let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
            let (shared, budget, ch, headers, key, codec) = (
                shared.clone(),
                budget.clone(),
                ch.clone(),
                headers.clone(),
                key.clone(),
                worker_codec.clone(),
            );
            async move {
                // A plan reads every dataset: refuse one without the cluster's key (the gRPC
                // layer checks it too; this also covers the in-process worker).
                if let Some(k) = &key
                    && !carries_key(&ctx.headers, k)
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
                    .with_distributed_user_codec(codec)
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
            counts: DistributedCounts::default(),
            worker,
            channels,
            codec,
        })
    }

    /// The gRPC service other query nodes send tasks to, checking the cluster key.
    pub(crate) fn routes(&self) -> tonic::service::Routes {
        let key = self.config.key.clone();
        let check = move |req: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
            match &key {
                Some(k) if !carries_key(&req.metadata().clone().into_headers(), k) => Err(
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

    /// After a failed distributed run: tries a connection to each other worker, leaves out
    /// those that do not answer within [`PROBE_TIMEOUT`] (until `leave_out_for` has passed),
    /// and names them; when all answer, tries again after [`PROBE_AGAIN_AFTER`].
    pub(crate) async fn leave_out_unreachable(&self) -> Vec<Url> {
        let down = self.probe_and_leave_out().await;
        if !down.is_empty() {
            return down;
        }
        // A node being killed breaks its connections a moment before its listening socket
        // closes: a probe in between finds it alive. Once more, a moment later.
        tokio::time::sleep(PROBE_AGAIN_AFTER).await;
        self.probe_and_leave_out().await
    }

    /// One round of probes: the workers left out.
    async fn probe_and_leave_out(&self) -> Vec<Url> {
        let others: Vec<Url> = self
            .peers
            .get()
            .into_iter()
            .filter(|u| *u != self.config.self_url)
            .collect();
        let probes = others.into_iter().map(|url| async move {
            let alive = match (url.host_str(), url.port_or_known_default()) {
                (Some(host), Some(port)) => matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(format!("{host}:{port}"))).await,
                    Ok(Ok(_))
                ),
                _ => false,
            };
            (url, alive)
        });
        let until = Instant::now() + self.config.leave_out_for;
        let mut down = Vec::new();
        for (url, alive) in futures::future::join_all(probes).await {
            if !alive {
                self.peers.leave_out(url.clone(), until);
                down.push(url);
            }
        }
        down
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
            .with_distributed_route_tasks_handler(route_by_segment(self.peers.clone()))
            .with_distributed_desired_task_count_handler(leaf_tasks(self.config.bytes_per_partition))
            .with_distributed_scale_up_leaf_node_handler(split_leaf)
            // A table's union of segments and fresh rows runs in every task, each task reading
            // its share of both (both leaves split per task), rather than one task of the few
            // given to the fresh rows alone.
            .with_distributed_children_isolator_unions(false)?
            .with_distributed_user_codec(self.codec.clone())
            .with_distributed_passthrough_headers(key_headers(&self.config.key)?)?
            .with_distributed_planner()
            .build();
        register_functions(&mut state)?;
        Ok((state, recorder))
    }
}

/// Task counts for the leaves Sonde's tables plan besides Parquet scans (which
/// datafusion-distributed sizes itself), so that none of them holds its whole stage to one task
/// (a leaf without a count is taken to need one, and a stage takes its leaves' lowest maximum):
/// a scan of fresh rows, one task per `bytes_per_partition` × the target partitions of its rows
/// in memory, as a Parquet scan gets one per as many bytes of its files; an empty scan, or a
/// few rows held in memory (a trace-id lookup's fresh rows), any number ([`split_leaf`] gives
/// the rows to the first task only).
fn leaf_tasks(bytes_per_partition: usize) -> impl DesiredTaskCountHandler {
    move |ev: DesiredTaskCountEvent| -> Option<Result<DesiredTaskCountEventResponse, DataFusionError>> {
        if let Some(scan) = ev.plan.downcast_ref::<BufferScanExec>() {
            let per_task = bytes_per_partition.saturating_mul(ev.session_config.target_partitions().max(1));
            return Some(Ok(DesiredTaskCountEventResponse::desired(scan.tasks_for(per_task))));
        }
        (ev.plan.is::<EmptyExec>() || memory_rows(ev.plan).is_some())
            .then(|| Ok(DesiredTaskCountEventResponse::desired(1)))
    }
}

/// Whether `plan` is a scan of rows held in memory.
fn memory_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<&MemorySourceConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<MemorySourceConfig>()
}

/// Cuts a leaf of a stage of `task_count` tasks: a scan of fresh rows into one slice of rows
/// per task; rows held in memory into themselves in the first task and nothing in the others.
fn split_leaf(ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse, DataFusionError>> {
    if ev.task_count <= 1 {
        return None;
    }
    let variants: Vec<Arc<dyn ExecutionPlan>> = if let Some(scan) = ev.plan.downcast_ref::<BufferScanExec>() {
        scan.split(ev.task_count)
    } else if memory_rows(ev.plan).is_some() {
        let partitions = ev.plan.properties().partitioning.partition_count();
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(ev.plan.schema()).with_partitions(partitions));
        std::iter::once(ev.plan.clone())
            .chain(std::iter::repeat_n(empty, ev.task_count - 1))
            .collect()
    } else {
        return None;
    };
    Some(
        DistributedLeafExec::try_new(ev.plan.clone(), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// Routes each task of a segment scan to the same worker every time (rendezvous hashing of its
/// files over the live workers), so that worker's chunk and footer caches hold them when the
/// next query reads the same segments; stages without a file scan keep the default routing.
/// Tasks go to distinct workers while there are enough, each to the first free one in its own
/// order of preference.
fn route_by_segment(peers: Peers) -> impl RouteTasksHandler {
    move |ev: RouteTasksEvent| -> Option<Result<RouteTasksEventResponse, DataFusionError>> {
        // A task's files across every split leaf of the stage (a union's scans of several
        // datasets, or one beside a scan of fresh rows, which names no file).
        let mut keys = vec![String::new(); ev.task_count];
        let _ = ev.plan.apply(|p| {
            if let Some(leaf) = p.downcast_ref::<DistributedLeafExec>()
                && leaf.variants().len() == ev.task_count
            {
                for (key, task) in keys.iter_mut().zip(leaf.variants()) {
                    key.push_str(&task_files(task));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if keys.iter().any(String::is_empty) {
            return None;
        }
        let urls = peers.get();
        if urls.is_empty() {
            return None;
        }
        Some(Ok(RouteTasksEventResponse::new(assign(&keys, &urls))))
    }
}

/// A worker for each task named by `keys`: its first free worker in rendezvous order (or its
/// first, once every worker has a task), so the same tasks over the same workers land alike, and
/// a worker joining or leaving moves only the tasks it wins or held.
fn assign(keys: &[String], urls: &[Url]) -> Vec<Url> {
    let mut taken = vec![false; urls.len()];
    keys.iter()
        .map(|key| {
            let mut order: Vec<usize> = (0..urls.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(sonde_model::rendezvous_weight(urls[i].as_str(), key)));
            let pick = order.iter().copied().find(|&i| !taken[i]).unwrap_or(order[0]);
            taken[pick] = true;
            urls[pick].clone()
        })
        .collect()
}

/// A task's files and byte ranges, which name it across queries (its projection and filters
/// vary; the split of the files does not).
fn task_files(task: &Arc<dyn ExecutionPlan>) -> String {
    let mut key = String::new();
    let _ = task.apply(|p| {
        if let Some(scan) = p.downcast_ref::<DataSourceExec>()
            && let Some(files) = scan.data_source().downcast_ref::<FileScanConfig>()
        {
            for f in files.file_groups.iter().flat_map(|g| g.files()) {
                let range = f.range.as_ref().map(|r| (r.start, r.end)).unwrap_or((0, 0));
                key.push_str(&format!("{}:{}..{};", f.object_meta.location, range.0, range.1));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    key
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
            ..Distribution::default()
        }
    }
}

/// Whether `plan` can run on other workers: every function it calls (in subqueries too) is one
/// a worker finds by its name in `state`'s registry, as datafusion-distributed sends functions
/// by name only; and it reads no sampled table, as a sample's Parquet row selection (a
/// `PartitionedFile` extension) does not survive the plan's serialisation.
pub(crate) fn portable(plan: &LogicalPlan, state: &SessionState) -> bool {
    let mut known = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let sampled = source_as_provider(&scan.source)
                .ok()
                .and_then(|p| p.downcast_ref::<DatasetTable>().map(DatasetTable::is_sampled));
            if sampled == Some(true) {
                known = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                known &= match e {
                    Expr::ScalarFunction(f) => state.scalar_functions().contains_key(f.func.name()),
                    Expr::AggregateFunction(f) => state.aggregate_functions().contains_key(f.func.name()),
                    Expr::WindowFunction(w) => match &w.fun {
                        WindowFunctionDefinition::AggregateUDF(f) => state.aggregate_functions().contains_key(f.name()),
                        WindowFunctionDefinition::WindowUDF(f) => state.window_functions().contains_key(f.name()),
                    },
                    _ => true,
                };
                Ok(if known {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            })
        })?;
        Ok(if known {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    known
}

/// The distributed plan as text, each stage with its tasks (what `EXPLAIN` answers).
pub(crate) fn explain(plan: &Arc<dyn ExecutionPlan>) -> String {
    datafusion_distributed::display_plan_ascii(plan.as_ref(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<Url> {
        (0..n)
            .map(|i| Url::parse(&format!("http://10.0.0.{i}:4317")).unwrap())
            .collect()
    }

    #[test]
    fn tasks_go_to_the_same_distinct_workers_every_time() {
        let keys: Vec<String> = (0..3).map(|i| format!("datasets/d/seg-{i}.parquet:0..100;")).collect();
        let four = urls(4);
        let first = assign(&keys, &four);
        assert_eq!(first, assign(&keys, &four), "the same answer every time");
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "three tasks, three workers: {first:?}");
        // The worker list in another order (another coordinator's view) changes nothing.
        let mut shuffled = four.clone();
        shuffled.reverse();
        assert_eq!(first, assign(&keys, &shuffled));
        // More tasks than workers: every worker busy, none left out.
        let many: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
        let two = urls(2);
        let got = assign(&many, &two);
        assert!(two.iter().all(|u| got.contains(u)), "{got:?}");
    }

    #[test]
    fn a_request_carries_the_key_only_when_it_is_exactly_the_same() {
        let headers = key_headers(&Some("k-1".into())).unwrap();
        assert!(carries_key(&headers, "k-1"));
        for other in ["k-2", "k-10", "k-", ""] {
            assert!(!carries_key(&headers, other), "{other:?}");
        }
        assert!(!carries_key(&http::HeaderMap::new(), "k-1"), "no header");
    }

    #[test]
    fn a_worker_leaving_moves_only_the_tasks_it_held() {
        // One task at a time (no competition for free workers): pure rendezvous.
        let five = urls(5);
        let mut moved = 0;
        for i in 0..200 {
            let key = vec![format!("seg-{i}")];
            let before = assign(&key, &five)[0].clone();
            let without: Vec<Url> = five.iter().filter(|u| **u != five[4]).cloned().collect();
            let after = assign(&key, &without)[0].clone();
            if before != five[4] {
                assert_eq!(before, after, "{key:?} moved though its worker stayed");
            } else {
                moved += 1;
            }
        }
        assert!((20..=60).contains(&moved), "about a fifth held by the leaver: {moved}");
    }
}
