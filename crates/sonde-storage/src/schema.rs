//! The column rules every reader of Sonde's data shares: how a [`sonde_model::ColumnType`] is
//! stored in Arrow, how a batch is brought to a wider schema, and when a column has so many
//! distinct values that grouping by it needs a different plan.

pub use crate::buffer::{arrow_type, column_type_of, timestamp_type};
pub use crate::is_reserved;
pub use crate::segment::{MANY_GROUPS, adapt_to_schema, batch_bytes, distinct_fraction};
