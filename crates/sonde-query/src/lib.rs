//! q
pub use datafusion;
