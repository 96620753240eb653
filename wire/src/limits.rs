//! Hard limits of the wire format.
//!
//! These bound what a single batch may cost a reader before it has even
//! looked at the records: a broker, a log or a consumer can size its buffers
//! from them and reject anything larger up front, without trusting the
//! producer. Topics may configure *lower* limits; nothing may exceed these.

/// Hard upper bound, in bytes, on one record batch including its 64-byte
/// header and trailing padding.
///
/// It bounds the memory any component must hold for a single batch (a
/// produce request, a segment read, a fetch response) and keeps every offset
/// inside a batch well within the 32-bit relative pointers of the rkyv
/// archive. Topics may set a lower `max_batch_size`; callers pass their limit
/// to [`peek_header`](crate::batch::peek_header) and friends, and the smaller
/// of the two always applies.
pub const BATCH_SIZE_MAX: usize = 16 * 1024 * 1024;

/// Hard upper bound on the number of records in one batch.
///
/// Bounds the per-record work (validation, index entries, filtering) that a
/// single batch can demand, independently of how small its records are.
pub const RECORDS_PER_BATCH_MAX: u32 = 1 << 20;
