//! The redb backend.
pub struct RedbStore;
