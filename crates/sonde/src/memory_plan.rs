//! One figure of memory (`--server-memory`) divided among everything that holds memory for
//! long: the write buffers, the requests (queries' operators and answers), and the caches.
//!
//! Each part still has its own flag; a flag given keeps its value and the others keep their
//! shares, so a user who knows what to give more to can, and one who does not sets one figure.
//! What the plan leaves out — the process itself, a flush's or a merge's file being encoded,
//! the allocator's slack — is why the default is below the 1.5 GiB a 2-core machine gives it.

/// The shares of one figure of memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryPlan {
    /// Write buffers of all datasets (`--max-buffer-bytes`): a quarter. Flushes start at half
    /// of it, so a buffer being written and the next one filling fit together.
    pub(crate) buffers: usize,
    /// All requests together (`--memory-limit`): half.
    pub(crate) requests: usize,
    /// One query (`--query-memory-limit`): a quarter, half of the requests' share, which it
    /// draws from. With all of it, one query holding exact percentiles beside a flush and a
    /// compaction took the process past 1.5 GiB at 10M events (1,476 MiB with those questions
    /// alone, 1,598 with the bench's questions); with a quarter the same run peaked at 1,172.
    pub(crate) query: usize,
    /// Parquet footers and page indexes (`--metadata-cache-bytes`): a sixteenth.
    pub(crate) metadata_cache: usize,
    /// Segment id indexes (`--index-cache-bytes`): an eighth, about 50M events' worth of unique
    /// trace ids at 1 GiB (a lookup re-reads the index files that do not fit).
    pub(crate) index_cache: usize,
    /// Column chunks (`--chunk-cache-bytes`): a thirty-second. The OS caches local files'
    /// pages anyway; over object storage, give it more.
    pub(crate) chunk_cache: usize,
    /// Precomputed partial aggregates (`--partials-cache-bytes`): a thirty-second.
    pub(crate) partials_cache: usize,
}

impl MemoryPlan {
    /// Default of `--server-memory`: 1 GiB.
    pub(crate) const DEFAULT_SERVER_MEMORY: usize = 1 << 30;

    /// The bytes planned in all: every part but `query`, which draws from `requests`.
    pub(crate) fn total(&self) -> usize {
        self.requests + self.buffers + self.metadata_cache + self.index_cache + self.chunk_cache + self.partials_cache
    }

    /// The plan for `total` bytes; the shares add up to `total`.
    pub(crate) fn of(total: usize) -> MemoryPlan {
        let part = |num: usize, den: usize| total / den * num;
        MemoryPlan {
            buffers: part(1, 4),
            requests: part(1, 2),
            query: part(1, 4),
            metadata_cache: part(1, 16),
            index_cache: part(1, 8),
            chunk_cache: part(1, 32),
            partials_cache: part(1, 32),
        }
    }
}
