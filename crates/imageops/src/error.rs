//! What a use-case answers when it does not do what was asked; each door maps it to its status
//! and shape (the dashboard's `AppError`, Glance's error document).

/// Why a use-case refused or failed. The message is what users read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not signed in (401).
    #[error("{0}")]
    NotSignedIn(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing, or the caller may not know it exists (404).
    #[error("{0}")]
    NotFound(String),
    /// The request breaks a rule (400).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A quota or a size limit would be exceeded (413).
    #[error("{0}")]
    TooLarge(String),
    /// The database failed (500; 507 when its disk is full: [`records::DbError::is_disk_full`]).
    #[error(transparent)]
    Db(#[from] records::DbError),
}

impl Error {
    /// The HTTP status this error means, at every door.
    pub fn status(&self) -> u16 {
        match self {
            Error::NotSignedIn(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Invalid(_) => 400,
            Error::Conflict(_) => 409,
            Error::TooLarge(_) => 413,
            Error::Db(e) if e.is_disk_full() => 507,
            Error::Db(_) => 500,
        }
    }

    /// A refusal from `policy::authorize`.
    pub fn denied(d: policy::Denial) -> Self {
        match d {
            policy::Denial::NotSignedIn => Error::NotSignedIn("Sign in first.".to_owned()),
            policy::Denial::Forbidden(why) => Error::Forbidden(why),
        }
    }
}

impl From<records::CatalogueError> for Error {
    fn from(e: records::CatalogueError) -> Self {
        use records::CatalogueError as E;
        match e {
            E::MarkerNotFound => Error::Invalid("The marker does not name an image you can see.".to_owned()),
            E::InvalidFilter(m) | E::InvalidValue(m) => Error::Invalid(m),
            E::LimitExceeded(m) => Error::TooLarge(m),
            e @ E::WrongStatus { .. } => Error::Forbidden(e.to_string()),
            E::Db(e) => Error::Db(e),
        }
    }
}
