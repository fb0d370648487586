//! A bounded, least-recently-used cache of the byte ranges queries read from segment files.
//!
//! Segment files are immutable once written (a compaction writes new files under new names), so
//! a byte range read once can be served from memory until it is evicted: no invalidation is
//! needed. This matters most over object storage, where every column chunk is an HTTP request;
//! on a local disk it saves the read system calls and the copy out of the page cache.
//!
//! The cache wraps the object store that queries read through (the storage layer writes through
//! the raw store), and only caches bounded ranges of `.parquet` files: listings, heads, whole-file
//! reads and everything else go straight through.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hits and misses since start, for `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct ChunkCacheStats {
    /// Ranges answered from memory.
    pub hits: AtomicU64,
    /// Ranges read from the store (and then cached).
    pub misses: AtomicU64,
}

type Key = (Path, u64, u64);

/// Entries and their recency order. `order` maps a use tick to its key, so the least recently
/// used entry is the first one: eviction is `O(log n)`.
#[derive(Default)]
struct Lru {
    map: HashMap<Key, (Bytes, Option<ObjectMeta>, u64)>,
    order: BTreeMap<u64, Key>,
    bytes: usize,
    tick: u64,
}

impl Lru {
    fn get(&mut self, key: &Key) -> Option<(Bytes, Option<ObjectMeta>)> {
        self.tick += 1;
        let tick = self.tick;
        let (data, meta, used) = self.map.get_mut(key)?;
        let old = std::mem::replace(used, tick);
        let out = (data.clone(), meta.clone());
        let k = self.order.remove(&old).expect("order holds every entry");
        self.order.insert(tick, k);
        Some(out)
    }

    fn put(&mut self, key: Key, data: Bytes, meta: Option<ObjectMeta>, limit: usize) {
        if data.len() > limit / 8 {
            // One huge range would flush everything else; not worth it.
            return;
        }
        self.tick += 1;
        self.bytes += data.len();
        if let Some((old, _, used)) = self.map.insert(key.clone(), (data, meta, self.tick)) {
            self.bytes -= old.len();
            self.order.remove(&used);
        }
        self.order.insert(self.tick, key);
        while self.bytes > limit {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _, _)) = self.map.remove(&oldest) {
                self.bytes -= d.len();
            }
        }
    }
}

/// An object store that remembers the ranges read from segment files, up to a byte limit.
pub struct ChunkCache {
    inner: Arc<dyn ObjectStore>,
    limit: usize,
    lru: Mutex<Lru>,
    /// Hit and miss counters.
    pub stats: ChunkCacheStats,
}

impl ChunkCache {
    /// Wraps `inner`, keeping at most `limit_bytes` of ranges in memory.
    pub fn new(inner: Arc<dyn ObjectStore>, limit_bytes: usize) -> ChunkCache {
        ChunkCache {
            inner,
            limit: limit_bytes,
            lru: Mutex::new(Lru::default()),
            stats: ChunkCacheStats::default(),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lru.lock().unwrap().bytes
    }

    fn cacheable(location: &Path) -> bool {
        location.extension() == Some("parquet")
    }

    /// One range, from memory or from the store.
    async fn range(&self, location: &Path, range: Range<u64>) -> Result<(Bytes, ObjectMeta)> {
        let key = (location.clone(), range.start, range.end);
        if let Some((data, Some(meta))) = self.lru.lock().unwrap().get(&key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((data, meta));
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let got = self
            .inner
            .get_opts(
                location,
                GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    ..Default::default()
                },
            )
            .await?;
        let meta = got.meta.clone();
        let data = got.bytes().await?;
        self.lru
            .lock()
            .unwrap()
            .put(key, data.clone(), Some(meta.clone()), self.limit);
        Ok((data, meta))
    }
}

impl fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkCache")
            .field("inner", &self.inner.to_string())
            .field("limit", &self.limit)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl fmt::Display for ChunkCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkCache({})", self.inner)
    }
}

/// Whether a get asks for nothing but a bounded range (no conditions, no head-only request), so
/// that a cached copy is an exact answer.
fn plain_range(options: &GetOptions) -> Option<Range<u64>> {
    let GetOptions {
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        version,
        head,
        ..
    } = options;
    let unconditional = if_match.is_none()
        && if_none_match.is_none()
        && if_modified_since.is_none()
        && if_unmodified_since.is_none()
        && version.is_none()
        && !head;
    match range {
        Some(GetRange::Bounded(r)) if unconditional => Some(r.clone()),
        _ => None,
    }
}

#[async_trait]
impl ObjectStore for ChunkCache {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match plain_range(&options) {
            Some(range) if Self::cacheable(location) => {
                let (data, meta) = self.range(location, range.clone()).await?;
                Ok(GetResult {
                    payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
                    meta,
                    range,
                    attributes: Default::default(),
                })
            }
            _ => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !Self::cacheable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        // Fetch the misses in one call so the inner store can coalesce them as it would have.
        let mut out: Vec<Option<Bytes>> = Vec::with_capacity(ranges.len());
        let mut missing = Vec::new();
        {
            let mut lru = self.lru.lock().unwrap();
            for r in ranges {
                let hit = lru.get(&(location.clone(), r.start, r.end)).map(|(d, _)| d);
                if hit.is_none() {
                    missing.push(r.clone());
                }
                out.push(hit);
            }
        }
        self.stats
            .hits
            .fetch_add((ranges.len() - missing.len()) as u64, Ordering::Relaxed);
        if missing.is_empty() {
            return Ok(out.into_iter().map(|b| b.expect("every range hit")).collect());
        }
        self.stats.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
        let fetched = self.inner.get_ranges(location, &missing).await?;
        // `get_ranges` does not return the file's meta, which only `get_opts` answers need: an
        // entry without it serves `get_ranges` and is refetched (with meta) by a `get_opts`.
        let mut fetched = fetched.into_iter();
        let mut lru = self.lru.lock().unwrap();
        Ok(out
            .into_iter()
            .zip(ranges)
            .map(|(hit, r)| {
                hit.unwrap_or_else(|| {
                    let data = fetched.next().expect("one answer per missing range");
                    lru.put((location.clone(), r.start, r.end), data.clone(), None, self.limit);
                    data
                })
            })
            .collect())
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn repeated_ranges_come_from_memory_and_the_cache_stays_bounded() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let file = Path::from("datasets/d/1.parquet");
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        inner.put(&file, body.clone().into()).await.unwrap();
        inner.put(&Path::from("catalog.json"), "{}".into()).await.unwrap();
        let cache = ChunkCache::new(inner.clone(), 1000);

        let a = cache.get_range(&file, 100..200).await.unwrap();
        assert_eq!(&a[..], &body[100..200]);
        let b = cache.get_range(&file, 100..200).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.misses.load(Ordering::Relaxed), 1);

        let got = cache.get_ranges(&file, &[100..200, 300..350]).await.unwrap();
        assert_eq!(&got[0][..], &body[100..200]);
        assert_eq!(&got[1][..], &body[300..350]);
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.stats.misses.load(Ordering::Relaxed), 2);

        // Many ranges later, the cache holds no more than its limit, and answers stay exact.
        for i in 0..50u64 {
            let r = cache.get_range(&file, i * 100..i * 100 + 120).await.unwrap();
            assert_eq!(&r[..], &body[(i * 100) as usize..(i * 100 + 120) as usize]);
        }
        assert!(cache.bytes() <= 1000, "{}", cache.bytes());
        // A range bigger than an eighth of the cache is read but not kept.
        cache.get_range(&file, 0..5000).await.unwrap();
        assert!(cache.bytes() <= 1000);
        // Other files pass through untouched.
        let c = cache
            .get(&Path::from("catalog.json"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&c[..], b"{}");
    }
}
