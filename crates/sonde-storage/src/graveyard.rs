//! Segments taken out of the catalog (by compaction, retention or deletion) wait here until
//! their files can be deleted: when no query still reads them *and* a catalog without them is
//! durable. Deleting earlier would leave a crash's recovered catalog naming a missing file, or
//! a running query without its input.
//!
//! "A catalog without them" is tracked by generation: each catalog snapshot takes the next
//! generation *before* it reads the datasets' segment lists, and a burial notes the newest
//! generation begun *after* the segment left its list. A segment buried at generation `g` is
//! absent from every snapshot of a later generation, so it may go once a generation above `g`
//! is durable. This holds whatever order flushes, merges and deletions interleave in (the
//! graveyard used to count its entries at store time and relied on the callers' lock for it).

use crate::catalog::SegmentMeta;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// See the module's note.
#[derive(Debug, Default)]
pub(crate) struct Graveyard {
    /// How long a buried segment's file stays at least (other processes may read it).
    grace: std::time::Duration,
    /// The newest catalog generation begun.
    begun: AtomicU64,
    /// The newest catalog generation known durable.
    durable: AtomicU64,
    buried: Mutex<Vec<Buried>>,
}

#[derive(Debug)]
struct Buried {
    segment: Arc<SegmentMeta>,
    /// The newest catalog generation begun when it was buried (which may still name it).
    at: u64,
    /// When it was buried.
    since: std::time::Instant,
}

impl Graveyard {
    /// A graveyard that keeps each file at least `grace` after its burial.
    pub(crate) fn with_grace(grace: std::time::Duration) -> Graveyard {
        Graveyard {
            grace,
            ..Default::default()
        }
    }

    /// Takes segments that have already been removed from their dataset's segment list.
    pub(crate) fn bury(&self, segments: impl IntoIterator<Item = Arc<SegmentMeta>>) {
        let at = self.begun.load(Ordering::SeqCst);
        let since = std::time::Instant::now();
        self.buried
            .lock()
            .unwrap()
            .extend(segments.into_iter().map(|segment| Buried { segment, at, since }));
    }

    /// Called before a catalog snapshot reads the segment lists; returns its generation.
    pub(crate) fn begin_catalog(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Called once the catalog of generation `generation` is durable.
    pub(crate) fn catalog_durable(&self, generation: u64) {
        self.durable.fetch_max(generation, Ordering::SeqCst);
    }

    /// Takes out the segments whose files may be deleted now.
    pub(crate) fn take_dead(&self) -> Vec<Arc<SegmentMeta>> {
        let durable = self.durable.load(Ordering::SeqCst);
        let mut dead = Vec::new();
        self.buried.lock().unwrap().retain(|b| {
            // One reference: ours. Any other is a query snapshot still reading the file.
            if b.at < durable && Arc::strong_count(&b.segment) == 1 && b.since.elapsed() >= self.grace {
                dead.push(b.segment.clone());
                false
            } else {
                true
            }
        });
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(id: u64) -> Arc<SegmentMeta> {
        Arc::new(SegmentMeta {
            id: crate::catalog::SegmentId(id),
            path: format!("seg-{id}.parquet"),
            ..Default::default()
        })
    }

    #[test]
    fn a_segment_goes_once_a_catalog_begun_after_its_burial_is_durable() {
        let g = Graveyard::default();
        let gen1 = g.begin_catalog();
        g.bury([segment(1)]); // buried while catalog 1 was being made: catalog 1 may name it
        g.catalog_durable(gen1);
        assert!(g.take_dead().is_empty());
        let gen2 = g.begin_catalog();
        g.catalog_durable(gen2);
        assert_eq!(g.take_dead().iter().map(|s| s.id.0).collect::<Vec<_>>(), [1]);
        assert!(g.take_dead().is_empty(), "taken once");
    }

    #[test]
    fn a_segment_stays_through_the_grace_period() {
        let g = Graveyard::with_grace(std::time::Duration::from_millis(50));
        g.bury([segment(3)]);
        let generation = g.begin_catalog();
        g.catalog_durable(generation);
        assert!(g.take_dead().is_empty(), "other nodes may still read it");
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(g.take_dead().len(), 1);
    }

    #[test]
    fn a_segment_a_query_still_reads_stays() {
        let g = Graveyard::default();
        let s = segment(7);
        g.bury([s.clone()]);
        let generation = g.begin_catalog();
        g.catalog_durable(generation);
        assert!(g.take_dead().is_empty(), "a snapshot holds it");
        drop(s);
        assert_eq!(g.take_dead().len(), 1);
    }

    #[test]
    fn an_older_catalog_made_durable_late_does_not_free_newer_burials() {
        let g = Graveyard::default();
        let old = g.begin_catalog();
        g.bury([segment(1)]);
        let newer = g.begin_catalog();
        g.catalog_durable(newer);
        g.catalog_durable(old);
        assert_eq!(g.take_dead().len(), 1, "durable is the newest generation stored");
        g.bury([segment(2)]);
        g.catalog_durable(old);
        assert!(g.take_dead().is_empty());
    }
}
