//! The configured storage backends (`[[storage]]` in hangar.toml), by name.

use std::path::Path;
use std::sync::Arc;

use storage::{Backend, BackendConfig, BackendKind};
use tokio::sync::Notify;

/// Every configured backend plus the default one, and the signal that wakes the job workers
/// (a use-case that queues a job rings it). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Stores {
    list: Arc<Vec<Arc<dyn Backend>>>,
    default: String,
    jobs: Arc<Notify>,
}

impl Stores {
    /// Opens the backends of `configs`; none configured means one Local backend named `local`
    /// under `data_dir/images`. Names must be unique; `default` must name one of them.
    pub fn open(configs: &[BackendConfig], default: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let mut configs = configs.to_vec();
        if configs.is_empty() {
            configs.push(BackendConfig { name: "local".into(), kind: BackendKind::Local, ..Default::default() });
        }
        let mut list: Vec<Arc<dyn Backend>> = Vec::new();
        for mut c in configs {
            if c.kind == BackendKind::Local && c.path.is_none() {
                c.path = Some(data_dir.join("images"));
            }
            if list.iter().any(|b| b.name() == c.name) {
                return Err(format!("two [[storage]] backends are named '{}'", c.name));
            }
            if !c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || c.name.len() > 64 {
                return Err(format!("storage name '{}' must be 1 to 64 letters, digits, '-' or '_'", c.name));
            }
            list.push(storage::open(&c).map_err(|e| e.to_string())?);
        }
        let default = match default {
            Some(d) if list.iter().any(|b| b.name() == d) => d.to_owned(),
            Some(d) => return Err(format!("default_storage '{d}' is not a configured [[storage]] backend")),
            None => list.first().map(|b| b.name().to_owned()).unwrap_or_default(),
        };
        Ok(Stores { list: Arc::new(list), default, jobs: Arc::new(Notify::new()) })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.list.iter().find(|b| b.name() == name)
    }

    pub fn default_backend(&self) -> &Arc<dyn Backend> {
        self.get(&self.default).or_else(|| self.list.first()).expect("at least one backend is always configured")
    }

    pub fn all(&self) -> &[Arc<dyn Backend>] {
        &self.list
    }

    /// Frees what interrupted writes left in every backend more than `age` ago (Ceph:
    /// incomplete multipart uploads of a process that died mid-write); returns how many. A
    /// backend that cannot be swept now is logged and tried again next time.
    pub async fn sweep_abandoned_writes(&self, age: std::time::Duration) -> usize {
        let mut freed = 0;
        for b in self.list.iter() {
            match b.sweep_abandoned_writes(age).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(backend = b.name(), count = n, "freed the parts of interrupted writes");
                    freed += n;
                }
                Err(e) => tracing::warn!(backend = b.name(), error = %e, "cannot sweep interrupted writes"),
            }
        }
        freed
    }

    /// Sweeps at start-up and then every `every`, for writes older than `age` (see
    /// [`Self::sweep_abandoned_writes`]).
    pub fn spawn_sweeper(&self, age: std::time::Duration, every: std::time::Duration) {
        let stores = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                stores.sweep_abandoned_writes(age).await;
            }
        });
    }

    /// The signal the job workers wait on (`server::jobs` takes it at start).
    pub fn job_signal(&self) -> Arc<Notify> {
        self.jobs.clone()
    }

    /// Wakes a job worker (after a job was queued or retried).
    pub fn wake_jobs(&self) {
        self.jobs.notify_one();
    }

    /// "choose one of: a, b", with the configured backends' names (for a message about a
    /// backend that does not exist).
    pub fn choose_one(&self) -> String {
        let names: Vec<&str> = self.all().iter().map(|b| b.name()).collect();
        format!("choose one of: {}", names.join(", "))
    }

    /// The default backend's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Deletes the bytes stored under `key` on `backend` (idempotent).
    pub async fn delete(&self, backend: &str, key: &str) -> Result<(), String> {
        match self.get(backend) {
            Some(b) => b.delete(key).await.map_err(|e| e.to_string()),
            None => Err(format!("no backend named '{backend}' is configured")),
        }
    }

    /// What depends on the bytes of `key` on `backend` (RBD clones), which a delete must not
    /// break; an unknown backend has none.
    pub async fn dependents(&self, backend: &str, key: &str) -> Result<Vec<String>, String> {
        match self.get(backend) {
            Some(b) => b.dependents(key).await.map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        }
    }

    /// Free and total bytes of a backend, where it can tell (bounded by its timeout).
    pub async fn space(&self, backend: &str) -> (Option<u64>, Option<u64>) {
        match self.get(backend) {
            Some(b) => match b.space().await {
                Ok(s) => (s.free, s.total),
                Err(err) => {
                    tracing::warn!(%backend, error = %err, "cannot read free space");
                    (None, None)
                }
            },
            None => (None, None),
        }
    }
}
