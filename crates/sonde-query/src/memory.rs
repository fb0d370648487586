//! One memory bound for every request the server answers.
//!
//! DataFusion's memory pool only sees what its operators reserve (hash tables, sorts); what a
//! request builds around a query — the batches an answer is collected from, the JSON text,
//! BubbleUp's counters, a trace's spans, a decompressed body — it never sees. So a cross join
//! with a large `LIMIT` passed DataFusion's cap and still took the process down while its answer
//! was built. Here every such path reserves from one [`MemoryBudget`] (`--memory-limit`) and
//! each request's answer is also capped on its own (`--max-answer-bytes`):
//!
//! - past a request's own cap the request is refused (400): asking for less fixes it;
//! - past the process budget — many requests together — it is refused with 503 and
//!   `Retry-After`: the same request succeeds once the others are done.
//!
//! DataFusion's per-query pool ([`BudgetedPool`]) draws from the same budget, so the sum of all
//! queries' operators and all answers stays under one figure.

use crate::engine::QueryError;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The process-wide budget of request memory (`--memory-limit`).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refused: AtomicU64,
}

/// A request asked for more than the budget had left.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the server's memory bound for requests (--memory-limit / SONDE_MEMORY_LIMIT = {limit} bytes) is \
     in use by other requests: {what} needed {wanted} more bytes; retry shortly"
)]
pub struct BudgetExceeded {
    /// The budget.
    pub limit: usize,
    /// What was being built.
    pub what: &'static str,
    /// Bytes asked for.
    pub wanted: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The bound in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Reservations refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn try_grow(&self, bytes: usize, what: &'static str) -> Result<(), BudgetExceeded> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(bytes);
            if next > self.limit {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(BudgetExceeded {
                    limit: self.limit,
                    what,
                    wanted: bytes,
                });
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
    }

    fn grow(&self, bytes: usize) {
        let next = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(next, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// An empty reservation, released when dropped.
    pub fn reservation(self: &Arc<Self>, what: &'static str) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
            what,
        }
    }

    /// A reservation of `bytes` now.
    pub fn reserve(self: &Arc<Self>, bytes: usize, what: &'static str) -> Result<Reservation, BudgetExceeded> {
        let mut r = self.reservation(what);
        r.try_grow(bytes)?;
        Ok(r)
    }
}

/// Bytes held from a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
    what: &'static str,
}

impl Reservation {
    /// Holds `more` bytes, or fails without holding any.
    pub fn try_grow(&mut self, more: usize) -> Result<(), BudgetExceeded> {
        self.budget.try_grow(more, self.what)?;
        self.bytes += more;
        Ok(())
    }

    /// Gives back up to `less` bytes.
    pub fn shrink(&mut self, less: usize) {
        let less = less.min(self.bytes);
        self.budget.release(less);
        self.bytes -= less;
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// One query's DataFusion memory pool: its own cap (`--query-memory-limit`, a fair share
/// between its spilling operators) inside the process budget.
#[derive(Debug)]
pub struct BudgetedPool {
    inner: FairSpillPool,
    budget: Arc<MemoryBudget>,
}

impl BudgetedPool {
    /// A pool capped at `limit` bytes that also draws from `budget`.
    pub fn new(limit: usize, budget: Arc<MemoryBudget>) -> BudgetedPool {
        BudgetedPool {
            inner: FairSpillPool::new(limit),
            budget,
        }
    }
}

impl std::fmt::Display for BudgetedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool ({} reserved, {} of the process budget of {} in use)",
            self.inner.reserved(),
            self.budget.used(),
            self.budget.limit()
        )
    }
}

impl MemoryPool for BudgetedPool {
    fn name(&self) -> &str {
        "sonde-budgeted"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.budget.grow(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.budget.release(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        self.budget
            .try_grow(additional, "a query's operators")
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            self.budget.release(additional);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// What one request may hold and how long it may take: its answer's own cap
/// (`--max-answer-bytes`), its reservation in the process budget, and its deadline
/// (`--query-timeout`, counted from the start of the request to the last byte of its answer).
#[derive(Debug)]
pub struct RequestBudget {
    held: Mutex<Reservation>,
    cap: usize,
    timeout: Duration,
    deadline: Instant,
}

impl RequestBudget {
    /// A request's budget, starting now.
    pub fn new(budget: &Arc<MemoryBudget>, cap: usize, timeout: Duration) -> RequestBudget {
        RequestBudget {
            held: Mutex::new(budget.reservation("an answer")),
            cap,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// The request's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The request's answer cap (`--max-answer-bytes`).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Fails once the deadline has passed.
    pub fn check_time(&self) -> Result<(), QueryError> {
        if Instant::now() >= self.deadline {
            return Err(QueryError::Timeout(self.timeout));
        }
        Ok(())
    }

    /// Bytes held so far.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().size()
    }

    /// Holds `bytes` more for `what`: refused past the request's cap (the request asks for too
    /// much) or the process budget (the server is busy).
    pub fn account(&self, bytes: usize, what: &str) -> Result<(), QueryError> {
        let mut held = self.held.lock().unwrap();
        if held.size().saturating_add(bytes) > self.cap {
            return Err(QueryError::AnswerTooLarge {
                limit: self.cap,
                what: what.to_string(),
            });
        }
        held.try_grow(bytes).map_err(QueryError::Overloaded)
    }

    /// Gives back `bytes` held for something no longer needed.
    pub fn release(&self, bytes: usize) {
        self.held.lock().unwrap().shrink(bytes);
    }
}

/// Bytes an Arrow batch really holds (its slices, not the buffers it shares): the rule the
/// storage counts its buffers by.
pub use sonde_storage::schema::batch_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let b = MemoryBudget::new(100);
        let mut r = b.reserve(60, "x").unwrap();
        assert!(b.reserve(50, "y").is_err());
        assert_eq!(b.refused(), 1);
        r.shrink(30);
        let r2 = b.reserve(50, "y").unwrap();
        assert_eq!(b.used(), 80);
        drop(r);
        drop(r2);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 80);
    }

    #[test]
    fn a_query_pool_draws_from_the_budget() {
        let b = MemoryBudget::new(1000);
        let pool: Arc<dyn MemoryPool> = Arc::new(BudgetedPool::new(800, b.clone()));
        let r1 = MemoryConsumer::new("a").register(&pool);
        r1.try_grow(700).unwrap();
        assert_eq!(b.used(), 700);
        // The query's own cap.
        assert!(r1.try_grow(200).is_err());
        // Another request holds the rest of the budget: the process bound refuses.
        let _other = b.reserve(250, "other").unwrap();
        let r2 = MemoryConsumer::new("b").register(&pool);
        let e = r2.try_grow(100).unwrap_err();
        assert!(matches!(e, DataFusionError::External(_)), "{e}");
        assert_eq!(b.used(), 950);
        drop(r1);
        assert_eq!(b.used(), 250);
    }
}
