//! Configuration in layers: built-in defaults, then an optional `hangar.toml`, then `HANGAR_*`
//! environment variables, then command-line flags. Each later layer overrides the earlier ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The server's settings after all layers were applied.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Where Hangar keeps its database and (later) image data.
    pub data_dir: PathBuf,
    /// The built site: `pkg/hangar.js`, `pkg/hangar_bg.wasm`, `pkg/hangar.css` and `public/` files.
    pub site_root: PathBuf,
    /// `tracing` filter, e.g. `info` or `server=debug,info`.
    pub log: String,
    /// Send the session cookie only over HTTPS. Off by default because the default listener is
    /// plain HTTP on loopback; turn it on behind a TLS-terminating proxy.
    pub secure_cookies: bool,
    /// Background job workers (imports, conversions, copies). Default: one per core.
    pub job_workers: usize,
    /// The `[[storage]]` backends; empty means one Local backend named `local` under the data
    /// directory (`<data_dir>/images`).
    pub storage: Vec<storage::BackendConfig>,
    /// Where uploads are stored unless the user picks another backend (default: the first).
    pub default_storage: Option<String>,
    /// Hosts the Glance API's `web-download` import may fetch from (exact, lower-cased host
    /// names or IP addresses). A bare host (`images.example.com`, `10.0.0.5`, `::1`) allows
    /// ports 80 and 443 only; `host:port` (`[v6]:port` for IPv6) allows exactly that port, so
    /// list both to allow both. A URI naming any other port is refused with 400. Empty, the
    /// default, turns the method off: fetching URLs from the server is an SSRF risk unless the
    /// operator names the hosts.
    pub web_download_allowed_hosts: Vec<String>,
    /// Reverse proxies (IP addresses or CIDR ranges) whose `X-Forwarded-For` is believed: a
    /// request from one of them is attributed (audit log, sign-in throttling) to the last
    /// address in that header that is not itself a trusted proxy. Empty, the default: the
    /// header is ignored, since any client can send it.
    pub trusted_proxies: Vec<crate::auth::IpRange>,
    /// How long a stop (SIGTERM, ctrl-c) may take: running jobs are stopped and queued again,
    /// in-flight requests get this long to finish. Default 30 s, well under systemd's 90 s.
    pub shutdown_timeout: std::time::Duration,
    /// Below this many free bytes in the data directory `/readyz` answers 503 `low_space`
    /// (uploads and conversions land there). Default 1 GiB.
    pub low_space_bytes: u64,
    /// How old a file in a staging area (`staging`, `uploads-glance`) must be, with no queued or
    /// running job and no upload or import of its image under way, before the running server's
    /// sweep removes it. Default one hour.
    pub orphan_grace: std::time::Duration,
    /// Glance's `show_image_direct_url`: images show `direct_url`, where a compute service reads
    /// a stored copy directly (an RBD backend's `rbd://<fsid>/<pool>/<image>/snap`, which Nova
    /// and Cinder clone copy-on-write). Off by default, as in Glance: it tells every user who can
    /// see the image where its bytes are.
    pub show_image_direct_url: bool,
}

/// Where the run command builds the site when Hangar is run from its source tree.
const SOURCE_TREE_SITE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/site");

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir: PathBuf::from("data"),
            site_root: PathBuf::from(SOURCE_TREE_SITE_ROOT),
            log: "info".to_owned(),
            secure_cookies: false,
            job_workers: std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            storage: Vec::new(),
            default_storage: None,
            web_download_allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            shutdown_timeout: std::time::Duration::from_secs(30),
            low_space_bytes: 1 << 30,
            orphan_grace: std::time::Duration::from_secs(3600),
            show_image_direct_url: false,
        }
    }
}

/// A configuration mistake, reported before anything starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    ReadFile { path: String, message: String },
    #[error("invalid config file {path}: {message}")]
    ParseFile { path: String, message: String },
    #[error("invalid value {value:?} for {key}: {message}")]
    BadValue { key: String, value: String, message: String },
    #[error("unknown option {0:?} (see --help)")]
    UnknownFlag(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
}

/// The file layer: every key optional, unknown keys refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    site_root: Option<PathBuf>,
    log: Option<String>,
    secure_cookies: Option<bool>,
    job_workers: Option<usize>,
    #[serde(default)]
    storage: Vec<storage::BackendConfig>,
    default_storage: Option<String>,
    web_download_allowed_hosts: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    shutdown_timeout: Option<u64>,
    low_space_bytes: Option<u64>,
    orphan_grace: Option<u64>,
    show_image_direct_url: Option<bool>,
}

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub help: bool,
    pub version: bool,
}

impl Flags {
    /// Parses `--listen ADDR`, `--data-dir DIR`, `--config FILE` (also as `--flag=value`),
    /// `--help` and `--version`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ConfigError> {
        let mut flags = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| inline.clone().or_else(|| args.next()).ok_or_else(|| ConfigError::MissingValue(name.to_owned()));
            match name.as_str() {
                "--listen" => flags.listen = Some(value("--listen")?),
                "--data-dir" => flags.data_dir = Some(PathBuf::from(value("--data-dir")?)),
                "--config" => flags.config = Some(PathBuf::from(value("--config")?)),
                "-h" | "--help" => flags.help = true,
                "-V" | "--version" => flags.version = true,
                "serve" => {}
                _ => return Err(ConfigError::UnknownFlag(arg)),
            }
        }
        Ok(flags)
    }
}

pub const USAGE: &str = "\
Hangar: upload, validate, convert and manage virtual machine images.

Usage: hangar [serve] [OPTIONS]

Options:
  --listen ADDR     address to listen on (default 127.0.0.1:3000; env HANGAR_LISTEN)
  --data-dir DIR    where the database and images live (default ./data; env HANGAR_DATA_DIR)
  --config FILE     configuration file (default ./hangar.toml if it exists; env HANGAR_CONFIG)
  -h, --help        show this help
  -V, --version     show the version

Other settings (file key / environment variable):
  site_root       / HANGAR_SITE_ROOT       the built web assets (default: the source tree's target/site)
  log             / HANGAR_LOG             log filter, e.g. info or server=debug (RUST_LOG also works)
  secure_cookies  / HANGAR_SECURE_COOKIES  true behind an HTTPS proxy
  job_workers     / HANGAR_JOB_WORKERS     background import/convert/copy workers (default: one per core)
  [[storage]]     (file only)              backends: name, kind = local|nfs|s3|rbd, timeout_secs;
                                           path (local/nfs); endpoint, bucket, region, access_key_id,
                                           secret_access_key, part_size_mib (s3; kind ceph means s3);
                                           pool, client, conf, keyring, object_size_mib,
                                           image_features (rbd); default: one local backend
  default_storage / HANGAR_DEFAULT_STORAGE where uploads go unless the user picks a backend
  web_download_allowed_hosts / HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS
                                           hosts the Glance API's web-download import may fetch
                                           from (a list in the file, comma-separated in the
                                           environment); a bare host allows ports 80 and 443,
                                           host:port ([v6]:port) exactly that port; default
                                           none, which turns it off
  low_space_bytes (file only)              /readyz answers 503 below this many free bytes in
                                           the data directory (default 1 GiB)
  orphan_grace / HANGAR_ORPHAN_GRACE       seconds before a staging file that no job, upload or
                                           import uses is swept (default 3600)
  shutdown_timeout / HANGAR_SHUTDOWN_TIMEOUT  seconds a stop may take (default 30): running
                                           jobs are stopped and queued for the next start
  trusted_proxies / HANGAR_TRUSTED_PROXIES reverse proxies (IPs or CIDR ranges) whose
                                           X-Forwarded-For names the client; default none
  show_image_direct_url / HANGAR_SHOW_IMAGE_DIRECT_URL
                                           true: Glance images show direct_url (an RBD copy's
                                           rbd://fsid/pool/image/snap, for Nova/Cinder clones);
                                           default false
";

impl Config {
    /// Applies the layers: defaults → file → environment (`env` yields `HANGAR_*` lookups) → flags.
    pub fn load(flags: &Flags, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Config::default();

        let explicit = flags.config.clone().or_else(|| env("HANGAR_CONFIG").map(PathBuf::from));
        let path = explicit.clone().or_else(|| {
            let default = PathBuf::from("hangar.toml");
            default.exists().then_some(default)
        });
        if let Some(path) = path {
            config.apply_file(&path)?;
        }

        if let Some(v) = env("HANGAR_LISTEN") {
            config.listen = parse_listen("HANGAR_LISTEN", &v)?;
        }
        if let Some(v) = env("HANGAR_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        // cargo-leptos passes the site root as LEPTOS_SITE_ROOT; ours wins if both are set.
        if let Some(v) = env("HANGAR_SITE_ROOT").or_else(|| env("LEPTOS_SITE_ROOT")) {
            config.site_root = PathBuf::from(v);
        }
        if let Some(v) = env("HANGAR_LOG").or_else(|| env("RUST_LOG")) {
            config.log = v;
        }
        if let Some(v) = env("HANGAR_SECURE_COOKIES") {
            config.secure_cookies = parse_bool("HANGAR_SECURE_COOKIES", &v)?;
        }
        if let Some(v) = env("HANGAR_DEFAULT_STORAGE") {
            config.default_storage = Some(v);
        }
        if let Some(v) = env("HANGAR_JOB_WORKERS") {
            config.job_workers = parse_workers("HANGAR_JOB_WORKERS", &v)?;
        }
        if let Some(v) = env("HANGAR_SHOW_IMAGE_DIRECT_URL") {
            config.show_image_direct_url = parse_bool("HANGAR_SHOW_IMAGE_DIRECT_URL", &v)?;
        }
        if let Some(v) = env("HANGAR_ORPHAN_GRACE") {
            config.orphan_grace = parse_seconds("HANGAR_ORPHAN_GRACE", &v)?;
        }
        if let Some(v) = env("HANGAR_SHUTDOWN_TIMEOUT") {
            config.shutdown_timeout = parse_seconds("HANGAR_SHUTDOWN_TIMEOUT", &v)?;
        }
        if let Some(v) = env("HANGAR_TRUSTED_PROXIES") {
            config.trusted_proxies = parse_proxies("HANGAR_TRUSTED_PROXIES", v.split(','))?;
        }
        if let Some(v) = env("HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS") {
            config.web_download_allowed_hosts = parse_hosts("HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS", v.split(','))?;
        }

        if let Some(v) = &flags.listen {
            config.listen = parse_listen("--listen", v)?;
        }
        if let Some(v) = &flags.data_dir {
            config.data_dir = v.clone();
        }
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile { path: shown.clone(), message: e.to_string() })?;
        let file: FileConfig =
            toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: shown.clone(), message: e.message().to_owned() })?;
        if let Some(v) = file.listen {
            self.listen = parse_listen("listen", &v)?;
        }
        // Relative paths in the file are relative to the file, not to wherever Hangar was started.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(v) = file.data_dir {
            self.data_dir = base.join(v);
        }
        if let Some(v) = file.site_root {
            self.site_root = base.join(v);
        }
        if let Some(v) = file.log {
            self.log = v;
        }
        if let Some(v) = file.secure_cookies {
            self.secure_cookies = v;
        }
        if let Some(v) = file.job_workers {
            self.job_workers = parse_workers("job_workers", &v.to_string())?;
        }
        for mut b in file.storage {
            // Relative backend paths are relative to the file too.
            b.path = b.path.map(|p| base.join(p));
            self.storage.push(b);
        }
        if let Some(v) = file.default_storage {
            self.default_storage = Some(v);
        }
        if let Some(v) = file.low_space_bytes {
            self.low_space_bytes = v;
        }
        if let Some(v) = file.show_image_direct_url {
            self.show_image_direct_url = v;
        }
        if let Some(v) = file.orphan_grace {
            self.orphan_grace = parse_seconds("orphan_grace", &v.to_string())?;
        }
        if let Some(v) = file.shutdown_timeout {
            self.shutdown_timeout = parse_seconds("shutdown_timeout", &v.to_string())?;
        }
        if let Some(v) = file.trusted_proxies {
            self.trusted_proxies = parse_proxies("trusted_proxies", v.iter().map(String::as_str))?;
        }
        if let Some(v) = file.web_download_allowed_hosts {
            self.web_download_allowed_hosts = parse_hosts("web_download_allowed_hosts", v.iter().map(String::as_str))?;
        }
        Ok(())
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("hangar.db")
    }
}

fn parse_listen(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        message: "expected IP:PORT, for example 127.0.0.1:3000".to_owned(),
    })
}

fn parse_workers(key: &str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(ConfigError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            message: "expected a number of workers from 1 to 64".to_owned(),
        }),
    }
}

/// Host names or IP addresses, each with an optional port (`host:port`, `[v6]:port`), trimmed
/// and lower-cased; blank entries are dropped. A URL, a path, credentials or a port that is not
/// a number from 1 to 65535 is a mistake.
fn parse_hosts<'a>(key: &str, values: impl Iterator<Item = &'a str>) -> Result<Vec<String>, ConfigError> {
    let port_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0);
    let mut hosts = Vec::new();
    for v in values.map(str::trim).filter(|v| !v.is_empty()) {
        let host_ok = if let Some(rest) = v.strip_prefix('[') {
            // [v6] or [v6]:port
            rest.split_once(']').is_some_and(|(ip, after)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok() && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok))
            })
        } else {
            match v.split_once(':') {
                None => true,
                // One colon: host:port. More: a bare IPv6 address.
                Some((host, port)) if !port.contains(':') => !host.is_empty() && port_ok(port),
                Some(_) => v.parse::<std::net::Ipv6Addr>().is_ok(),
            }
        };
        if !host_ok || v.contains(['/', '@', '?', '#', ' ', '\t']) {
            return Err(ConfigError::BadValue {
                key: key.to_owned(),
                value: v.to_owned(),
                message: "expected host names or IP addresses, each with an optional port, for example images.example.com or \
                          10.0.0.5:8080 (no scheme or path)"
                    .to_owned(),
            });
        }
        hosts.push(v.to_ascii_lowercase());
    }
    Ok(hosts)
}

fn parse_seconds(key: &str, value: &str) -> Result<std::time::Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(std::time::Duration::from_secs(n)),
        _ => Err(ConfigError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            message: "expected a number of seconds from 1 to 3600".to_owned(),
        }),
    }
}

fn parse_proxies<'a>(key: &str, values: impl Iterator<Item = &'a str>) -> Result<Vec<crate::auth::IpRange>, ConfigError> {
    values
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse().map_err(|_| ConfigError::BadValue {
                key: key.to_owned(),
                value: v.to_owned(),
                message: "expected IP addresses or CIDR ranges, for example 10.0.0.2 or 10.0.0.0/24".to_owned(),
            })
        })
        .collect()
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::BadValue { key: key.to_owned(), value: value.to_owned(), message: "expected true or false".to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_listen_on_loopback_3000() {
        let c = Config::load(&Flags::default(), env_of(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert!(!c.secure_cookies);
        assert!(c.web_download_allowed_hosts.is_empty(), "web-download is off by default");
    }

    #[test]
    fn web_download_hosts_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hangar.toml");
        std::fs::write(&file, "web_download_allowed_hosts = [\"Images.Example.com\", \"10.0.0.5\"]\n").unwrap();
        let flags = Flags { config: Some(file), ..Flags::default() };
        let c = Config::load(&flags, env_of(&[])).unwrap();
        assert_eq!(c.web_download_allowed_hosts, ["images.example.com", "10.0.0.5"]);
        let c = Config::load(&flags, env_of(&[("HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS", " 127.0.0.1 , ,::1")])).unwrap();
        assert_eq!(c.web_download_allowed_hosts, ["127.0.0.1", "::1"], "the environment replaces the file's list");
        let c = Config::load(&flags, env_of(&[("HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS", "")])).unwrap();
        assert!(c.web_download_allowed_hosts.is_empty(), "an empty variable turns it off");
        let c = Config::load(&flags, env_of(&[("HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS", "x:8080,[::1]:9,[::1],X.example:443")])).unwrap();
        assert_eq!(c.web_download_allowed_hosts, ["x:8080", "[::1]:9", "[::1]", "x.example:443"], "host:port entries name a port");
        for bad in ["http://x", "x:", "x:port", "x:0", "x:65536", "x:-1", ":80", "[::1]x", "[x]:80", "u@x", "x/y"] {
            let err = Config::load(&Flags::default(), env_of(&[("HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS", bad)])).unwrap_err();
            assert!(matches!(err, ConfigError::BadValue { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hangar.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:4000\"\ndata_dir = \"state\"\nlog = \"debug\"\n").unwrap();

        let flags = Flags { config: Some(file.clone()), ..Flags::default() };
        let c = Config::load(&flags, env_of(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(c.data_dir, dir.path().join("state"), "relative to the file");
        assert_eq!(c.log, "debug");

        let c = Config::load(&flags, env_of(&[("HANGAR_LISTEN", "127.0.0.1:5000"), ("HANGAR_DATA_DIR", "/srv/h")])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/srv/h"));

        let flags = Flags::parse(args(&["--config", file.to_str().unwrap(), "--listen=127.0.0.1:6000", "--data-dir", "/x"])).unwrap();
        let c = Config::load(&flags, env_of(&[("HANGAR_LISTEN", "127.0.0.1:5000")])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/x"));
    }

    #[test]
    fn mistakes_are_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hangar.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:4000\"\n").unwrap();
        let flags = Flags { config: Some(file), ..Flags::default() };
        let err = Config::load(&flags, env_of(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { ref message, .. } if message.contains("unknown field")), "{err}");

        let err = Config::load(&Flags::default(), env_of(&[("HANGAR_LISTEN", "localhost")])).unwrap_err();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err}");

        let missing = Flags { config: Some(dir.path().join("nope.toml")), ..Flags::default() };
        assert!(matches!(Config::load(&missing, env_of(&[])), Err(ConfigError::ReadFile { .. })));

        assert_eq!(Flags::parse(args(&["--lisen", "x"])), Err(ConfigError::UnknownFlag("--lisen".into())));
        assert_eq!(Flags::parse(args(&["--listen"])), Err(ConfigError::MissingValue("--listen".into())));
        assert!(Flags::parse(args(&["serve", "--help"])).unwrap().help);
    }
}
