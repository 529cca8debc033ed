//! Reading a result row by column name, whichever driver returned it: sqlx's `AnyRow`
//! (both backends) or rusqlite's `Row` (the inline SQLite reads, `store::inline`). Row
//! parsers written against [`Columns`] serve both.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::StoreError;

/// Typed access to the columns of one row.
pub(super) trait Columns {
    /// An INTEGER column.
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    /// A nullable INTEGER column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    /// A TEXT column.
    fn text(&self, col: &str) -> Result<String, StoreError>;
    /// A nullable TEXT column.
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    /// A BLOB column.
    fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    /// A nullable BLOB column.
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

impl Columns for AnyRow {
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(col)?)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(col)?)
    }
    fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.get(col)?)
    }
    fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(col)?)
    }
}
