//! The seam between storage and query: what a query reads, and nothing of how it got there.
//!
//! The query engine depends on [`DatasetSource`] and the types of this module only. [`Storage`]
//! is the source of a single node: its catalog's segments and its own write buffers. On a
//! query node of a cluster (`Role::Query`) it is the same `Storage`, whose segments follow the
//! shared catalog in object storage and whose `buffered` rows are its copy of the ingest node's
//! write buffer (`crate::fresh`), named by the snapshot's `fresh` position so that a distributed
//! plan can name them instead of carrying them.
//!
//! **The contract of a snapshot:** every acknowledged event of the dataset up to the moment
//! the snapshot is taken is in exactly one of `segments` and `buffered` — never in both (a
//! flush moves events from one to the other atomically with respect to snapshots) and never
//! in neither. Queries may then sum over both without deduplicating.

use crate::Storage;
use object_store::ObjectStore;
use sonde_model::DatasetName;
use std::sync::Arc;

pub use crate::catalog::{ColumnEntry, SegmentId, SegmentMeta};
pub use crate::fresh::{FreshPosition, Owner, rows_between};
pub use crate::index::{IndexCache, SegmentIndex, hash_value};
pub use crate::{DatasetInfo, DatasetSnapshot};

/// Where a query's data comes from. See the module's note for the snapshot contract.
pub trait DatasetSource: Send + Sync + std::fmt::Debug {
    /// Facts about every dataset (names, sizes, time bounds), in name order.
    fn datasets(&self) -> Vec<DatasetInfo>;
    /// A consistent view of one dataset, or `None` when it does not exist.
    fn snapshot(&self, dataset: &DatasetName) -> Option<DatasetSnapshot>;
    /// The object store holding the snapshots' segment files (their paths are relative to it).
    fn segment_store(&self) -> Arc<dyn ObjectStore>;
    /// The id-column indexes of the segments (trace and span ids), shared across queries.
    fn segment_index(&self) -> Arc<IndexCache>;
}

impl DatasetSource for Storage {
    fn datasets(&self) -> Vec<DatasetInfo> {
        Storage::datasets(self)
    }
    fn snapshot(&self, dataset: &DatasetName) -> Option<DatasetSnapshot> {
        Storage::snapshot(self, dataset)
    }
    fn segment_store(&self) -> Arc<dyn ObjectStore> {
        self.object_store()
    }
    fn segment_index(&self) -> Arc<IndexCache> {
        self.index_cache()
    }
}
