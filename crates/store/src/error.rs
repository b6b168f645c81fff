//! Postgres failures as answers a caller acts on. A constraint violation is named, never a 500.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint: the thing exists already (the constraint's name says which).
    #[error("conflict on {0}")]
    Conflict(String),
    /// A check, foreign-key or trigger constraint refused the change.
    #[error("refused by constraint {0}")]
    Constraint(String),
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// The partition lease was taken over: this owner may not commit.
    #[error("partition lease lost (fenced)")]
    Fenced,
    /// Anything else: connection lost, server down, bug.
    #[error("database error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub(crate) fn internal<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        StoreError::Internal(Box::new(e))
    }

    /// Whether retrying the same call later may succeed (the server was away).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Internal(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) => {
                let name = db.constraint().unwrap_or("unnamed").to_owned();
                match db.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => StoreError::Conflict(name),
                    sqlx::error::ErrorKind::ForeignKeyViolation
                    | sqlx::error::ErrorKind::CheckViolation
                    | sqlx::error::ErrorKind::NotNullViolation => StoreError::Constraint(name),
                    _ => StoreError::internal(e),
                }
            }
            _ => StoreError::internal(e),
        }
    }
}
