//! QED (refused; see `luks.rs` for the shared "recognise to refuse" helpers).

pub(crate) use super::luks::inspect_qed as inspect;
