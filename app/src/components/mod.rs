//! Reusable view pieces: props in, events out. Server calls belong to pages.

pub mod feedback;
pub mod shell;
pub mod size;
