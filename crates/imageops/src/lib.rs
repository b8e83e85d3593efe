//! Hangar's image use-cases, written once for every door: the dashboard's server functions
//! (`app/src/api/`) and the Glance API (`server/src/glance/`) parse their requests, call a
//! function here, and map its [`Error`] to their own answer. A use-case takes the caller
//! (`accounts::Authn`), authorizes through `policy`, applies the rules, changes the records and
//! the stored bytes, and writes the audit log; the adapters hold no business rule.
//!
//! Without the `service` feature only the pure parts build ([`units`], [`declared`]), so the
//! browser bundle can share them.

pub mod declared;
pub mod units;

/// The property of a package's first image that names the package's disks that did not become
/// images, and why (a quota, the store); set by the import, shown by the dashboard.
pub const NOT_KEPT: &str = "package_disks_not_kept";

#[cfg(feature = "service")]
mod arrival;
#[cfg(feature = "service")]
mod copy;
#[cfg(feature = "service")]
mod create;
#[cfg(feature = "service")]
mod data;
#[cfg(feature = "service")]
mod error;
#[cfg(feature = "service")]
mod matrix;
#[cfg(feature = "service")]
mod package;
#[cfg(feature = "service")]
mod service;
#[cfg(feature = "service")]
mod shares;
#[cfg(feature = "service")]
mod staged;
#[cfg(feature = "service")]
mod status;
#[cfg(feature = "service")]
pub mod stores;
#[cfg(feature = "service")]
mod update;

#[cfg(feature = "service")]
pub use arrival::{BodyHold, Restore};
#[cfg(feature = "service")]
pub use create::{is_uuid, metadata, NewImageRequest};
#[cfg(feature = "service")]
pub use data::{Admitted, Arrival, ReceivedData, IMAGE_SIZE_CAP};
#[cfg(feature = "service")]
pub use error::Error;
#[cfg(feature = "service")]
pub use matrix::{check_cell, CellRequest};
#[cfg(feature = "service")]
pub use package::Related;
#[cfg(feature = "service")]
pub use service::{action_name, audit, image_facts, write_denial, Images};
#[cfg(feature = "service")]
pub use shares::MAX_MEMBERS;
#[cfg(feature = "service")]
pub use staged::Received;
#[cfg(feature = "service")]
pub use status::StatusAction;
#[cfg(feature = "service")]
pub use stores::Stores;
#[cfg(feature = "service")]
pub use update::{check_update, parse_visibility, ImageFields};
