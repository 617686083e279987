//! How records are kept in redb: serde_json values checked against their
//! key on reading, redb's errors sorted into the store's, and newest-first
//! pages over an index.

use std::ops::RangeBounds;

use bbc_graph::Scalar;
use redb::{ReadableTable, Table};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{
    AuditEntry, Build, BuildRequest, BuildSet, Change, Page, Properties, Result, StoreError,
};

/// redb's errors, sorted into "the data is bad" and "the disk or database
/// failed".
pub(super) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_) => StoreError::Corrupt(format!("database: {e}")),
        redb::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("database: {e}"))
        }
        redb::Error::Io(ref io) => StoreError::Io(io_message("database", io)),
        // redb's own text asks the caller to close and reopen the
        // database, which the store does by itself (see `RedbStore::db`).
        redb::Error::PreviousIo => StoreError::Io(
            "database: an earlier I/O error stopped the database; it is reopened on the next call"
                .to_string(),
        ),
        _ => StoreError::Io(format!("database: {e}")),
    }
}

/// An I/O error as the store reports it: a full disk (or quota) said in so
/// many words, since that is what an operator can act on.
pub(super) fn io_message(what: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::StorageFull => format!("the disk is full ({what}: {e})"),
        std::io::ErrorKind::QuotaExceeded => format!("the disk quota is exceeded ({what}: {e})"),
        _ => format!("{what}: {e}"),
    }
}

/// Records stored under their own id: the id in the value must match the
/// key, which catches values written under the wrong key.
pub(in crate::store) trait Record: Serialize + DeserializeOwned {
    const TABLE: &'static str;
    fn id(&self) -> u64;
}

macro_rules! record {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl Record for $ty {
            const TABLE: &'static str = $what;
            fn id(&self) -> u64 {
                self.id
            }
        }
    )*};
}

record! {
    Change => "change",
    AuditEntry => "audit entry",
    BuildSet => "build set",
    BuildRequest => "build request",
    Build => "build",
}

pub(in crate::store) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what} does not decode: {e}")))
}

pub(in crate::store) fn decode_record<T: Record>(id: u64, bytes: &[u8]) -> Result<T> {
    let rec: T = decode(&format!("{} {id}", T::TABLE), bytes)?;
    if rec.id() != id {
        return Err(StoreError::Corrupt(format!(
            "{} {id} is stored with id {}",
            T::TABLE,
            rec.id()
        )));
    }
    Ok(rec)
}

pub(in crate::store) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    // Serialising these types cannot fail (string map keys only), but the
    // error is still reported rather than unwrapped.
    serde_json::to_vec(value).map_err(|e| StoreError::Io(format!("encoding {what}: {e}")))
}

pub(super) fn get_record<T: Record>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<T>> {
    match table.get(id).map_err(db_err)? {
        None => Ok(None),
        Some(v) => decode_record(id, v.value()).map(Some),
    }
}

/// Loads a record that an index or another record refers to: its absence
/// means the database is inconsistent.
pub(super) fn must_get<T: Record>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<T> {
    get_record(table, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("{} {id} is referenced but missing", T::TABLE)))
}

pub(super) fn put_record<T: Record>(
    table: &mut Table<'_, u64, &'static [u8]>,
    rec: &T,
) -> Result<()> {
    let bytes = encode(T::TABLE, rec)?;
    table.insert(rec.id(), bytes.as_slice()).map_err(db_err)?;
    Ok(())
}

/// JSON has no NaN or infinity: serde_json would write `null`, which does
/// not decode back into a `Scalar`, and the record would become unreadable.
/// Such values are stored as their text instead ("NaN", "inf", "-inf").
pub(in crate::store) fn storable(props: &mut Properties) {
    for v in props.values_mut() {
        if let Scalar::Float(f) = v {
            if !f.is_finite() {
                *v = Scalar::String(f.to_string());
            }
        }
    }
}

/// Keys of an id-ordered index newest first, below `before` (exclusive).
/// Boxed so that the callers can pick an index at run time.
pub(super) type Ids<'a> = Box<dyn Iterator<Item = Result<u64>> + 'a>;

pub(super) fn ids_desc<'a, K, V, R, KR>(
    table: &'a impl ReadableTable<K, V>,
    range: R,
    id_of: fn(K::SelfType<'_>) -> u64,
) -> Result<Ids<'a>>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    R: RangeBounds<KR> + 'a,
    KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
{
    let iter = table.range(range).map_err(db_err)?;
    Ok(Box::new(iter.rev().map(move |r| {
        r.map(|(k, _)| id_of(k.value())).map_err(db_err)
    })))
}

/// Ids of one builder in a `(builder, id)` index, newest first, below
/// `hi` (exclusive).
pub(super) fn builder_ids_desc<'a, V: redb::Value + 'static>(
    table: &'a impl ReadableTable<(&'static str, u64), V>,
    builder: &'a str,
    hi: u64,
) -> Result<Ids<'a>> {
    ids_desc(table, (builder, 0)..(builder, hi), |k| k.1)
}

/// The exclusive upper id bound of a page. Ids never reach u64::MAX.
pub(super) fn upper(page: &Page) -> u64 {
    page.before.unwrap_or(u64::MAX)
}

/// Loads `page.limit` records of `ids` that pass `keep`.
pub(super) fn collect_page<T: Record>(
    ids: Ids<'_>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    limit: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for id in ids {
        let rec: T = must_get(records, id?)?;
        if keep(&rec) {
            out.push(rec);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}
