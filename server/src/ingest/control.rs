//! Job control for one import: progress, cancellation, the stop at a stage boundary, and
//! the test-only hold (`HANGAR_TEST_HOLD_AT`).

use super::*;

/// Progress and cancellation shared between a running import and its job.
#[derive(Debug, Default)]
pub struct JobControl {
    /// Bytes processed so far and the expected total (inspection, conversion, hashing).
    pub done: AtomicU64,
    pub total: AtomicU64,
    /// Set when the job is cancelled: the pipeline stops at its next step.
    pub cancel: AtomicBool,
    /// Set (with `cancel`) when the server is stopping: the pipeline stops the same way, but
    /// the image and its upload are left for the job to run again at the next start.
    pub stopping: AtomicBool,
    /// The current [`Stage`].
    stage: std::sync::Mutex<Stage>,
}

/// Fault injection for tests only (server/tests/it/faults.rs): with `HANGAR_TEST_HOLD_AT` naming a
/// stage, a job that reaches that stage stops there for good, so a test can kill the process
/// with SIGKILL at exactly that point and check that the next start loses nothing. Unset in
/// production, where this is one environment lookup per stage.
pub(super) fn test_hold_at(stage: Stage) -> bool {
    std::env::var("HANGAR_TEST_HOLD_AT").is_ok_and(|s| s == stage.as_str())
}

/// What an import or copy is doing now; the job row carries it to the upload card and the
/// jobs page ("Converting… 40%" says more than "Verifying").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    #[default]
    Starting,
    Inspecting,
    Converting,
    Unpacking,
    Hashing,
    Downloading,
    Storing,
    /// The bytes are in the backend; recording where, and making the image active.
    Publishing,
}

impl Stage {
    /// The name stored in `jobs.stage` (see `app::api::upload::import_stage_line`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Inspecting => "inspecting",
            Stage::Converting => "converting",
            Stage::Unpacking => "unpacking",
            Stage::Hashing => "hashing",
            Stage::Downloading => "downloading",
            Stage::Storing => "storing",
            Stage::Publishing => "publishing",
        }
    }
}

impl JobControl {
    pub(super) fn check(&self) -> Result<(), IngestError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(IngestError::Cancelled)
        } else {
            Ok(())
        }
    }
    /// Stops the job because the server is stopping: see [`JobControl::stopping`].
    pub fn stop_for_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.cancel.store(true, Ordering::Relaxed);
    }
    /// Whether the job was stopped by a shutdown (and is to run again), not cancelled.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
    pub(super) fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }
    /// Enters `stage` (the job's progress writer picks it up). Called on blocking threads (the
    /// pipeline's steps); async code uses [`JobControl::enter`].
    pub fn set_stage(&self, stage: Stage) {
        // A poisoned lock still holds a valid Stage.
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stage;
        if test_hold_at(stage) {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    /// Enters `stage` from async code (storing, publishing).
    pub async fn enter(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stage;
        if test_hold_at(stage) {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    pub fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// Progress for a conversion or extraction: feeds `done`, and stops it mid-way (its
    /// output deleted) once the job is cancelled.
    pub(super) fn progress(&self) -> convert::Cancellable<'_, impl FnMut(u64, u64) + '_> {
        convert::Cancellable::new(move |bytes_in: u64, _out: u64| self.set_done(bytes_in), &self.cancel)
    }
    /// A conversion error as the import's outcome: cancelled, failed (the operating system
    /// refused a read or write: a full disk, an I/O error; the data is not to blame) or refused
    /// (anything the data caused, a corrupt compressed member included), with `say(e)`.
    pub(super) fn refusal(&self, e: convert::Error, say: impl FnOnce(&convert::Error) -> String) -> IngestError {
        let os_error =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()).is_some_and(|io| io.raw_os_error().is_some());
        match e.kind() {
            convert::ErrorKind::Cancelled => IngestError::Cancelled,
            convert::ErrorKind::Io if os_error => IngestError::failed_by(say(&e), e),
            _ => IngestError::Refused(say(&e)),
        }
    }
}
