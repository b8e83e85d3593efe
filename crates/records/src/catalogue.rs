//! The image catalogue's queries: filtered, sorted, marker-paged listing; the detail row;
//! metadata updates, tags, status transitions and deletion.
//!
//! The listing follows Glance v2 (G `glance/db/sqlalchemy/api.py` `_image_get_all` and
//! `_select_images_query`), because the same query serves the dashboard and the Glance-compatible
//! API that python-glanceclient and openstackclient talk to:
//!
//! - who sees what: a project sees its own images, `public` and `community` ones, and `shared`
//!   ones it is a member of with the requested `member_status` (default `accepted`);
//! - the default view (no `visibility` filter) leaves out `community` images the caller does not
//!   own; `visibility=all` brings them back; any other value lists only that visibility;
//! - `os_hidden` images are left out unless the filter asks for them;
//! - sort keys are followed by `id` (in the last key's direction) so the order is total, and
//!   paging is keyset paging from the marker row's values, correct with NULLs (SQLite sorts NULL
//!   first ascending, last descending) and with mixed directions.
//!
//! SQL is assembled only from fixed fragments and the column names of [`SortKey`]; every value a
//! caller supplies is bound.

use std::collections::BTreeMap;

use domain::{ImageStatus, Visibility};
use sqlx::sqlite::SqliteArguments;
use sqlx::{FromRow, Sqlite};

use crate::{Db, DbError, NewImage, Visible};

pub use crate::images::MAX_LIST_LIMIT;

/// Rows per page when the caller does not say (Glance's `limit_param_default`).
pub const DEFAULT_LIST_LIMIT: u32 = 25;

/// Longest image name, tag and property key (Glance's schema: `maxLength: 255`).
pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_TAG_CHARS: usize = 255;
pub use policy::metadata::{valid_property_key, MAX_PROPERTY_KEY_CHARS};

/// Tags and custom properties per image (Glance's `image_tag_quota` and `image_property_quota`;
/// Glance answers 413 above them).
pub const MAX_TAGS: usize = 128;
pub const MAX_PROPERTIES: usize = 128;

/// The format `created_at`/`updated_at` are stored in; it sorts lexically in time order.
const TIMESTAMP_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')";

/// Errors of the catalogue's queries. The API layer maps all but `Db` to 4xx answers.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The paging marker names no image the caller can see (Glance answers 400).
    #[error("the marker does not name an image you can see")]
    MarkerNotFound,
    /// A filter or sort value is malformed: a bad property key, date or operator (400).
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A value to store breaks Glance's rules: a tag or name too long, a bad visibility (400).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// More tags or properties than an image may have (Glance answers 413).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The change needs the image in another status than the one it has now (its disk or
    /// container format, once its data is arriving; Glance answers 403).
    #[error("Attribute {field} can be only replaced for a queued image (this one is {status}).")]
    WrongStatus { field: &'static str, status: ImageStatus },
    /// The database failed; logged in full, shown to users as an internal error.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for CatalogueError {
    fn from(e: sqlx::Error) -> Self {
        CatalogueError::Db(DbError::Sqlx(e))
    }
}

/// Everything the catalogue stores about one image, with its owner's project name.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct ImageDetail {
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub status_reason: String,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub visibility: Visibility,
    pub protected: bool,
    pub os_hidden: bool,
    pub min_disk: i64,
    pub min_ram: i64,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    /// MD5 of the stored bytes (Glance's legacy `checksum`).
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// SHA-256 of the bytes the user uploaded.
    pub sha256: Option<String>,
    pub uploaded_format: Option<String>,
    pub uploaded_size: Option<i64>,
    pub owner: Option<String>,
    pub owner_name: Option<String>,
    pub created_by: Option<String>,
    /// JSON object text; see [`ImageDetail::property_map`].
    pub properties: String,
    /// JSON array text; see [`ImageDetail::tag_list`].
    pub tags: String,
    /// The inspector's report (JSON).
    pub findings: String,
    pub created_at: String,
    pub updated_at: String,
}

impl ImageDetail {
    /// The tags, in the order they were added. A column that is not a JSON array of strings
    /// (never written by Hangar) reads as no tags rather than failing the page.
    pub fn tag_list(&self) -> Vec<String> {
        match serde_json::from_str::<Vec<serde_json::Value>>(&self.tags) {
            Ok(values) => values.into_iter().map(json_to_string).collect(),
            Err(e) => {
                tracing::warn!(image = %self.id, error = %e, "image tags are not a JSON array");
                Vec::new()
            }
        }
    }

    /// The custom properties, sorted by key. Glance's values are strings; anything else stored
    /// there is shown as its JSON text.
    pub fn property_map(&self) -> BTreeMap<String, String> {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&self.properties) {
            Ok(map) => map.into_iter().map(|(k, v)| (k, json_to_string(v))).collect(),
            Err(e) => {
                tracing::warn!(image = %self.id, error = %e, "image properties are not a JSON object");
                BTreeMap::new()
            }
        }
    }
}

fn json_to_string(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Columns of [`ImageDetail`], over `images i LEFT JOIN projects p`.
const DETAIL_COLUMNS: &str = "i.id, i.name, i.status, i.status_reason, i.disk_format, i.container_format, \
     i.visibility, i.protected, i.os_hidden, i.min_disk, i.min_ram, i.size, i.virtual_size, i.checksum, \
     i.os_hash_algo, i.os_hash_value, i.sha256, i.uploaded_format, i.uploaded_size, i.owner, \
     p.name AS owner_name, i.created_by, i.properties, i.tags, i.findings, i.created_at, i.updated_at";
const DETAIL_FROM: &str = "images i LEFT JOIN projects p ON p.id = i.owner";

/// Glance's `visibility` list filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisibilityFilter {
    Public,
    Private,
    Shared,
    Community,
    /// Everything the caller may see, community images included.
    All,
}

impl VisibilityFilter {
    /// Parses Glance's query value (`public|private|shared|community|all`; anything else is 400).
    pub fn parse(s: &str) -> Result<Self, CatalogueError> {
        Ok(match s {
            "public" => Self::Public,
            "private" => Self::Private,
            "shared" => Self::Shared,
            "community" => Self::Community,
            "all" => Self::All,
            _ => {
                return Err(CatalogueError::InvalidFilter(format!(
                    "visibility must be public, private, shared, community or all, not {s:?}"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Community => "community",
            Self::All => "all",
        }
    }
}

/// Glance's `member_status` filter: which shared images of other projects are listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemberStatusFilter {
    Pending,
    #[default]
    Accepted,
    Rejected,
    All,
}

impl MemberStatusFilter {
    pub fn parse(s: &str) -> Result<Self, CatalogueError> {
        Ok(match s {
            "pending" => Self::Pending,
            "accepted" => Self::Accepted,
            "rejected" => Self::Rejected,
            "all" => Self::All,
            _ => return Err(CatalogueError::InvalidFilter(format!("member_status must be pending, accepted, rejected or all, not {s:?}"))),
        })
    }

    fn status(self) -> Option<&'static str> {
        match self {
            Self::Pending => Some("pending"),
            Self::Accepted => Some("accepted"),
            Self::Rejected => Some("rejected"),
            Self::All => None,
        }
    }
}

/// A comparison operator of Glance's time filters (`created_at=gte:2024-01-01T00:00:00Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl TimeOp {
    fn sql(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Eq => "=",
            Self::Neq => "<>",
        }
    }
}

/// A validated time comparison, normalised to the stored format `YYYY-MM-DDTHH:MM:SSZ` (UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeFilter {
    op: TimeOp,
    at: String,
}

impl TimeFilter {
    /// A comparison with an ISO 8601 time: `2024-05-01`, `2024-05-01T10:00`, `…T10:00:00Z`,
    /// `…T12:00:00+02:00`, fractions of a second. A time without a zone is UTC (as in Glance).
    pub fn new(op: TimeOp, iso8601: &str) -> Result<Self, CatalogueError> {
        let (seconds, fraction) =
            parse_iso8601(iso8601).ok_or_else(|| CatalogueError::InvalidFilter(format!("{iso8601:?} is not an ISO 8601 date and time")))?;
        // Stored times have whole seconds. A fraction moves the comparison to the whole second
        // that gives the same answer: t >= 10.5 ⇔ t > 10, t < 10.5 ⇔ t <= 10; no stored time
        // equals 10.5.
        let op = match (fraction, op) {
            (false, op) => op,
            (true, TimeOp::Gte) => TimeOp::Gt,
            (true, TimeOp::Lt) => TimeOp::Lte,
            (true, op) => op,
        };
        let at = format_timestamp(seconds)
            .ok_or_else(|| CatalogueError::InvalidFilter(format!("{iso8601:?} is outside the years 0000 to 9999")))?;
        let filter = TimeFilter { op, at };
        Ok(if fraction && matches!(op, TimeOp::Eq | TimeOp::Neq) { filter.never_equal() } else { filter })
    }

    pub fn op(&self) -> TimeOp {
        self.op
    }

    /// The normalised time, `YYYY-MM-DDTHH:MM:SSZ` (with `.5` appended for an `eq`/`neq` with a
    /// fraction of a second, which no stored time can equal).
    pub fn at(&self) -> &str {
        &self.at
    }

    /// `eq`/`neq` with a fractional second: no stored time is equal. Encoded as a comparison with
    /// a time no timestamp can equal, so the SQL stays one shape.
    fn never_equal(mut self) -> Self {
        self.at.push_str(".5");
        self
    }
}

/// The ISO 8601 forms a time filter takes (`time`'s format description, version 2): a date,
/// optionally a time of day (`T`, `t` or a space; minutes at least, seconds and a fraction of
/// them optional), optionally a zone (`Z`, or ±HH with optional minutes, with or without `:`).
const ISO8601_FILTER: &str = "[year]-[month]-[day]\
    [optional [[first [T] [t] [ ]][hour]:[minute][optional [:[second][optional [[first [.] [,]][subsecond]]]]]]]\
    [optional [[first [Z] [z] [[offset_hour sign:mandatory][optional [[optional [:]][offset_minute]]]]]]]";

/// Seconds since 1970 (UTC) and whether a non-zero fraction of a second was given.
fn parse_iso8601(s: &str) -> Option<(i64, bool)> {
    use std::sync::OnceLock;
    use time::format_description::OwnedFormatItem;
    static FORMAT: OnceLock<Option<OwnedFormatItem>> = OnceLock::new();
    let format = FORMAT.get_or_init(|| time::format_description::parse_owned::<2>(ISO8601_FILTER).ok()).as_ref()?;
    let mut parsed = time::parsing::Parsed::new();
    let rest = parsed.parse_item(s.as_bytes(), format).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let date = time::Date::from_calendar_date(parsed.year()?, parsed.month()?, parsed.day()?.get()).ok()?;
    let subsecond = parsed.subsecond().unwrap_or(0);
    let clock =
        time::Time::from_hms_nano(parsed.hour_24().unwrap_or(0), parsed.minute().unwrap_or(0), parsed.second().unwrap_or(0), subsecond)
            .ok()?;
    let offset = match parsed.offset_hour() {
        None => time::UtcOffset::UTC,
        // ISO 8601 zones are at most ±23:59 (`time` takes up to ±25:59).
        Some(h) if h.abs() <= 23 => time::UtcOffset::from_hms(h, parsed.offset_minute_signed().unwrap_or(0), 0).ok()?,
        Some(_) => return None,
    };
    let at = time::PrimitiveDateTime::new(date, clock).assume_offset(offset);
    Some((at.unix_timestamp(), subsecond != 0))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since 1970, if the year has four digits.
fn format_timestamp(seconds: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    (0..=9999).contains(&at.year()).then(|| {
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second())
    })
}

/// A column images can be sorted by (Glance's sort keys plus a few the dashboard offers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortKey {
    Name,
    Status,
    ContainerFormat,
    DiskFormat,
    Size,
    VirtualSize,
    Id,
    CreatedAt,
    UpdatedAt,
    Visibility,
    MinDisk,
    MinRam,
    Owner,
}

impl SortKey {
    pub const ALL: [SortKey; 13] = [
        SortKey::Name,
        SortKey::Status,
        SortKey::ContainerFormat,
        SortKey::DiskFormat,
        SortKey::Size,
        SortKey::VirtualSize,
        SortKey::Id,
        SortKey::CreatedAt,
        SortKey::UpdatedAt,
        SortKey::Visibility,
        SortKey::MinDisk,
        SortKey::MinRam,
        SortKey::Owner,
    ];

    /// The key's name in Glance's `sort_key`/`sort` parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Status => "status",
            SortKey::ContainerFormat => "container_format",
            SortKey::DiskFormat => "disk_format",
            SortKey::Size => "size",
            SortKey::VirtualSize => "virtual_size",
            SortKey::Id => "id",
            SortKey::CreatedAt => "created_at",
            SortKey::UpdatedAt => "updated_at",
            SortKey::Visibility => "visibility",
            SortKey::MinDisk => "min_disk",
            SortKey::MinRam => "min_ram",
            SortKey::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CatalogueError> {
        SortKey::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| CatalogueError::InvalidFilter(format!("cannot sort by {s:?}")))
    }

    /// The column; the only identifiers that reach SQL from a caller's choice.
    fn column(self) -> &'static str {
        match self {
            SortKey::Name => "i.name",
            SortKey::Status => "i.status",
            SortKey::ContainerFormat => "i.container_format",
            SortKey::DiskFormat => "i.disk_format",
            SortKey::Size => "i.size",
            SortKey::VirtualSize => "i.virtual_size",
            SortKey::Id => "i.id",
            SortKey::CreatedAt => "i.created_at",
            SortKey::UpdatedAt => "i.updated_at",
            SortKey::Visibility => "i.visibility",
            SortKey::MinDisk => "i.min_disk",
            SortKey::MinRam => "i.min_ram",
            SortKey::Owner => "i.owner",
        }
    }

    fn nullable(self) -> bool {
        matches!(self, SortKey::ContainerFormat | SortKey::DiskFormat | SortKey::Size | SortKey::VirtualSize | SortKey::Owner)
    }

    /// The marker row's value of this key.
    fn value_of(self, row: &ImageDetail) -> Arg {
        let text = |s: &Option<String>| s.clone().map_or(Arg::Null, Arg::Text);
        let int = |n: Option<i64>| n.map_or(Arg::Null, Arg::Int);
        match self {
            SortKey::Name => Arg::Text(row.name.clone()),
            SortKey::Status => Arg::Text(row.status.as_str().to_owned()),
            SortKey::ContainerFormat => text(&row.container_format),
            SortKey::DiskFormat => text(&row.disk_format),
            SortKey::Size => int(row.size),
            SortKey::VirtualSize => int(row.virtual_size),
            SortKey::Id => Arg::Text(row.id.clone()),
            SortKey::CreatedAt => Arg::Text(row.created_at.clone()),
            SortKey::UpdatedAt => Arg::Text(row.updated_at.clone()),
            SortKey::Visibility => Arg::Text(row.visibility.as_str().to_owned()),
            SortKey::MinDisk => Arg::Int(row.min_disk),
            SortKey::MinRam => Arg::Int(row.min_ram),
            SortKey::Owner => text(&row.owner),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortDir {
    Asc,
    Desc,
}

impl SortDir {
    pub fn parse(s: &str) -> Result<Self, CatalogueError> {
        match s {
            "asc" => Ok(SortDir::Asc),
            "desc" => Ok(SortDir::Desc),
            _ => Err(CatalogueError::InvalidFilter(format!("sort direction must be asc or desc, not {s:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortDir::Asc => "asc",
            SortDir::Desc => "desc",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            SortDir::Asc => "ASC",
            SortDir::Desc => "DESC",
        }
    }
}

/// A listing request. Every filter is optional (empty lists and `None` filter nothing) and they
/// combine with AND; list-valued filters match any of their values.
#[derive(Clone, Debug, Default)]
pub struct ImageQuery {
    /// Exact ids (Glance's `id=in:…`).
    pub ids: Vec<String>,
    /// Exact names (Glance's `name=` and `name=in:…`).
    pub names: Vec<String>,
    /// The dashboard's search: a case-insensitive (ASCII) substring of the name.
    pub name_contains: Option<String>,
    /// The image has one of these statuses; `Some` of an empty list matches nothing (a Glance
    /// filter naming only statuses that do not exist, which Glance answers with no images).
    pub statuses: Option<Vec<ImageStatus>>,
    pub disk_formats: Vec<String>,
    pub container_formats: Vec<String>,
    /// `None` is Glance's default view.
    pub visibility: Option<VisibilityFilter>,
    pub member_status: MemberStatusFilter,
    /// Owning project ids.
    pub owners: Vec<String>,
    /// The image must have every one of these tags.
    pub tags: Vec<String>,
    /// Inclusive bounds on `size`; images without a size never match a bound.
    pub size_min: Option<i64>,
    pub size_max: Option<i64>,
    pub created_at: Vec<TimeFilter>,
    pub updated_at: Vec<TimeFilter>,
    pub protected: Option<bool>,
    /// `None` and `Some(false)` leave hidden images out; `Some(true)` lists only hidden ones.
    pub os_hidden: Option<bool>,
    pub checksum: Option<String>,
    pub os_hash_value: Option<String>,
    /// Custom properties that must equal the given values. Values compare as text, as Glance's
    /// properties are strings; a property stored as a JSON number does not match.
    pub properties: Vec<(String, String)>,
    /// Sort keys in order; empty means `created_at desc`. `id` is appended as the tie-breaker.
    pub sort: Vec<(SortKey, SortDir)>,
    /// The id of the last image of the previous page.
    pub marker: Option<String>,
    /// Rows per page: [`DEFAULT_LIST_LIMIT`] when `None`, at most [`MAX_LIST_LIMIT`].
    pub limit: Option<u32>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePage {
    pub images: Vec<ImageDetail>,
    /// The marker for the next page; `None` on the last page.
    pub next_marker: Option<String>,
    /// How many images match the filters, ignoring paging.
    pub total: u64,
}

/// A value bound to a `?`.
#[derive(Clone, Debug)]
enum Arg {
    Text(String),
    Int(i64),
    Null,
}

/// SQL fragments joined by AND, with their binds in order.
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    fn push(&mut self, sql: impl Into<String>, args: impl IntoIterator<Item = Arg>) {
        self.sql.push(sql.into());
        self.args.extend(args);
    }

    /// `column IN (?, ?, …)` for a non-empty list.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.push(format!("{column} IN ({marks})"), values.iter().cloned().map(Arg::Text));
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            "1 = 1".to_owned()
        } else {
            self.sql.join(" AND ")
        }
    }
}

fn bind_args<'q, O>(
    mut q: sqlx::query::QueryAs<'q, Sqlite, O, SqliteArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::QueryAs<'q, Sqlite, O, SqliteArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(n) => q.bind(*n),
            Arg::Null => q.bind(None::<&str>),
        };
    }
    q
}

/// Who may see an image at all (Glance's `_select_images_query`): `member_status` `None` accepts
/// any membership (the marker check, like Glance's `is_image_visible`).
fn push_access(c: &mut Conditions, visible: Visible<'_>, member_status: Option<&'static str>) {
    match visible {
        Visible::All => {}
        Visible::PublicOnly => c.push("i.visibility IN ('public', 'community')", []),
        Visible::Project(p) => {
            let status = if member_status.is_some() { " AND m.status = ?" } else { "" };
            let mut args = vec![Arg::Text(p.to_owned()), Arg::Text(p.to_owned())];
            args.extend(member_status.map(|s| Arg::Text(s.to_owned())));
            c.push(
                format!(
                    "(i.owner = ? OR i.visibility IN ('public', 'community') OR (i.visibility = 'shared' AND EXISTS \
                     (SELECT 1 FROM image_members m WHERE m.image_id = i.id AND m.project_id = ?{status})))"
                ),
                args,
            );
        }
    }
}

impl ImageQuery {
    /// The sort keys with `id` appended (in the last key's direction, as Glance does with one
    /// `sort_dir`), repeated keys dropped.
    fn order(&self) -> Vec<(SortKey, SortDir)> {
        let mut keys: Vec<(SortKey, SortDir)> = Vec::new();
        for &(k, d) in if self.sort.is_empty() { &[(SortKey::CreatedAt, SortDir::Desc)][..] } else { &self.sort[..] } {
            if !keys.iter().any(|(seen, _)| *seen == k) {
                keys.push((k, d));
            }
        }
        if let Some(&(_, last)) = keys.last().filter(|_| !keys.iter().any(|(k, _)| *k == SortKey::Id)) {
            keys.push((SortKey::Id, last));
        }
        keys
    }

    fn conditions(&self, visible: Visible<'_>) -> Result<Conditions, CatalogueError> {
        let mut c = Conditions::default();
        push_access(&mut c, visible, self.member_status.status());
        match (self.visibility, visible) {
            (Some(VisibilityFilter::All), _) => {}
            (Some(v), _) => c.push("i.visibility = ?", [Arg::Text(v.as_str().to_owned())]),
            // Without a visibility filter community images are listed only to their owner.
            (None, Visible::Project(p)) => c.push("(i.owner = ? OR i.visibility <> 'community')", [Arg::Text(p.to_owned())]),
            (None, _) => c.push("i.visibility <> 'community'", []),
        }
        c.push(if self.os_hidden == Some(true) { "i.os_hidden = 1" } else { "i.os_hidden = 0" }, []);
        c.any_of("i.id", &self.ids);
        c.any_of("i.name", &self.names);
        if let Some(needle) = self.name_contains.as_deref().filter(|s| !s.is_empty()) {
            let mut pattern = String::with_capacity(needle.len() + 2);
            pattern.push('%');
            for ch in needle.chars() {
                if matches!(ch, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(ch);
            }
            pattern.push('%');
            c.push("i.name LIKE ? ESCAPE '\\'", [Arg::Text(pattern)]);
        }
        match &self.statuses {
            Some(s) if s.is_empty() => c.push("0 = 1", []),
            Some(s) => c.any_of("i.status", &s.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>()),
            None => {}
        }
        c.any_of("i.disk_format", &self.disk_formats);
        c.any_of("i.container_format", &self.container_formats);
        c.any_of("i.owner", &self.owners);
        for tag in &self.tags {
            c.push("EXISTS (SELECT 1 FROM json_each(i.tags) t WHERE t.value = ?)", [Arg::Text(tag.clone())]);
        }
        if let Some(n) = self.size_min {
            c.push("i.size >= ?", [Arg::Int(n)]);
        }
        if let Some(n) = self.size_max {
            c.push("i.size <= ?", [Arg::Int(n)]);
        }
        for (column, filters) in [("i.created_at", &self.created_at), ("i.updated_at", &self.updated_at)] {
            for f in filters {
                c.push(format!("{column} {} ?", f.op.sql()), [Arg::Text(f.at.clone())]);
            }
        }
        if let Some(p) = self.protected {
            c.push("i.protected = ?", [Arg::Int(i64::from(p))]);
        }
        if let Some(s) = &self.checksum {
            c.push("i.checksum = ?", [Arg::Text(s.clone())]);
        }
        if let Some(s) = &self.os_hash_value {
            c.push("i.os_hash_value = ?", [Arg::Text(s.clone())]);
        }
        for (key, value) in &self.properties {
            if !valid_property_key(key) {
                return Err(CatalogueError::InvalidFilter(format!(
                    "property names are 1 to 255 letters, digits and _ : . - ; {key:?} is not one"
                )));
            }
            c.push("json_extract(i.properties, ?) = ?", [Arg::Text(format!("$.\"{key}\"")), Arg::Text(value.clone())]);
        }
        Ok(c)
    }
}

/// Rows strictly after the marker in `order` (Glance's `_paginate_query`, made NULL-aware):
/// OR over i of (keys before i equal AND key i after), plus a range bound on the first key so
/// SQLite can start from an index instead of scanning from the top.
fn push_after_marker(c: &mut Conditions, order: &[(SortKey, SortDir)], marker: &ImageDetail) {
    let mut alternatives = Vec::with_capacity(order.len());
    let mut args = Vec::new();
    for (i, &(key, dir)) in order.iter().enumerate() {
        let mut parts = Vec::with_capacity(i + 1);
        for &(prev, _) in &order[..i] {
            // `IS` compares NULL with NULL as equal, unlike `=`.
            let op = if prev.nullable() { "IS" } else { "=" };
            parts.push(format!("{} {op} ?", prev.column()));
            args.push(prev.value_of(marker));
        }
        let col = key.column();
        let v = key.value_of(marker);
        let after = match (dir, matches!(v, Arg::Null)) {
            // NULLs come first ascending: after a NULL come the non-NULLs.
            (SortDir::Asc, true) => format!("{col} IS NOT NULL"),
            (SortDir::Asc, false) => format!("{col} > ?"),
            // NULLs come last descending: nothing comes after a NULL.
            (SortDir::Desc, true) => "0".to_owned(),
            (SortDir::Desc, false) if key.nullable() => format!("({col} < ? OR {col} IS NULL)"),
            (SortDir::Desc, false) => format!("{col} < ?"),
        };
        if !matches!(v, Arg::Null) {
            args.push(v);
        }
        parts.push(after);
        alternatives.push(format!("({})", parts.join(" AND ")));
    }
    c.push(format!("({})", alternatives.join(" OR ")), args);
    if let Some(&(key, dir)) = order.first() {
        let col = key.column();
        match (dir, key.value_of(marker)) {
            (SortDir::Asc, Arg::Null) => {}
            (SortDir::Asc, v) => c.push(format!("{col} >= ?"), [v]),
            (SortDir::Desc, Arg::Null) => c.push(format!("{col} IS NULL"), []),
            (SortDir::Desc, v) if key.nullable() => c.push(format!("({col} <= ? OR {col} IS NULL)"), [v]),
            (SortDir::Desc, v) => c.push(format!("{col} <= ?"), [v]),
        }
    }
}

/// A metadata change; `None` leaves a field as it is. Tags and properties are replaced whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePatch {
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub protected: Option<bool>,
    pub os_hidden: Option<bool>,
    pub min_disk: Option<i64>,
    pub min_ram: Option<i64>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub properties: Option<BTreeMap<String, String>>,
    pub tags: Option<Vec<String>>,
}

/// What a tag change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagChange {
    ImageNotFound,
    Changed,
    /// Adding a tag the image has, or removing one it does not have (Glance: 204 and 404).
    Unchanged,
    /// The image has [`MAX_TAGS`] tags already (Glance answers 413).
    LimitReached,
}

/// What a status action (deactivate, reactivate) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusChange {
    ImageNotFound,
    Changed,
    /// The image was in the target status already (Glance: a no-op, 204).
    Unchanged,
    /// The image's status does not allow the action (Glance refuses); carries that status.
    WrongStatus(ImageStatus),
}

/// What deleting an image did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    NotFound,
    /// Protected images cannot be deleted until unprotected (Glance answers 403).
    Protected,
    /// The row is gone; the caller deletes these `(backend, key)` copies' bytes.
    Deleted {
        locations: Vec<(String, String)>,
    },
}

fn check_tag(tag: &str) -> Result<(), CatalogueError> {
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS {
        return Err(CatalogueError::InvalidValue(format!("a tag has 1 to {MAX_TAG_CHARS} characters")));
    }
    Ok(())
}

impl ImagePatch {
    /// Checks Glance's rules and returns the JSON to store for properties and tags.
    fn validate(&self) -> Result<(Option<String>, Option<String>), CatalogueError> {
        if let Some(name) = &self.name {
            if name.chars().count() > MAX_NAME_CHARS {
                return Err(CatalogueError::InvalidValue(format!("an image name has at most {MAX_NAME_CHARS} characters")));
            }
        }
        if self.min_disk.is_some_and(|n| n < 0) || self.min_ram.is_some_and(|n| n < 0) {
            return Err(CatalogueError::InvalidValue("min_disk and min_ram cannot be negative".to_owned()));
        }
        let properties = match &self.properties {
            None => None,
            Some(map) => {
                if map.len() > MAX_PROPERTIES {
                    return Err(CatalogueError::LimitExceeded(format!("an image has at most {MAX_PROPERTIES} properties")));
                }
                if let Some(bad) = map.keys().find(|k| !valid_property_key(k)) {
                    return Err(CatalogueError::InvalidValue(format!(
                        "property names are 1 to 255 letters, digits and _ : . - ; {bad:?} is not one"
                    )));
                }
                Some(serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect()).to_string())
            }
        };
        let tags = match &self.tags {
            None => None,
            Some(list) => {
                // Glance keeps tags as a set; the first occurrence keeps its place.
                let mut unique: Vec<&str> = Vec::with_capacity(list.len());
                for t in list {
                    check_tag(t)?;
                    if !unique.contains(&t.as_str()) {
                        unique.push(t);
                    }
                }
                if unique.len() > MAX_TAGS {
                    return Err(CatalogueError::LimitExceeded(format!("an image has at most {MAX_TAGS} tags")));
                }
                Some(serde_json::Value::from(unique).to_string())
            }
        };
        Ok((properties, tags))
    }
}

impl Db {
    /// One image with every column and its owner's project name. Callers check who may see it.
    pub async fn image_detail(&self, id: &str) -> Result<Option<ImageDetail>, DbError> {
        let sql = format!("SELECT {DETAIL_COLUMNS} FROM {DETAIL_FROM} WHERE i.id = ?");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    /// A page of the images `visible` may see that match `query`, in its order (see the module
    /// docs for Glance's rules). An unknown or invisible marker is [`CatalogueError::MarkerNotFound`].
    pub async fn query_images(&self, query: &ImageQuery, visible: Visible<'_>) -> Result<ImagePage, CatalogueError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT);
        let order = query.order();
        let filters = query.conditions(visible)?;

        let count_sql = format!("SELECT COUNT(*) FROM images i WHERE {}", filters.where_clause());
        let (total,): (i64,) = bind_args(sqlx::query_as(&count_sql), &filters.args).fetch_one(self.pool()).await?;
        let total = u64::try_from(total).unwrap_or(0);
        if limit == 0 {
            return Ok(ImagePage { images: Vec::new(), next_marker: None, total });
        }

        let mut page = filters;
        if let Some(marker) = &query.marker {
            let mut access = Conditions::default();
            access.push("i.id = ?", [Arg::Text(marker.clone())]);
            push_access(&mut access, visible, None);
            let sql = format!("SELECT {DETAIL_COLUMNS} FROM {DETAIL_FROM} WHERE {}", access.where_clause());
            let row: Option<ImageDetail> = bind_args(sqlx::query_as(&sql), &access.args).fetch_optional(self.pool()).await?;
            let row = row.ok_or(CatalogueError::MarkerNotFound)?;
            push_after_marker(&mut page, &order, &row);
        }
        let order_by: Vec<String> = order.iter().map(|(k, d)| format!("{} {}", k.column(), d.sql())).collect();
        let sql =
            format!("SELECT {DETAIL_COLUMNS} FROM {DETAIL_FROM} WHERE {} ORDER BY {} LIMIT ?", page.where_clause(), order_by.join(", "));
        // One row more than the page says whether there is a next page.
        page.args.push(Arg::Int(i64::from(limit) + 1));
        let mut images: Vec<ImageDetail> = bind_args(sqlx::query_as(&sql), &page.args).fetch_all(self.pool()).await?;
        let next_marker = if images.len() > limit as usize {
            images.truncate(limit as usize);
            images.last().map(|i| i.id.clone())
        } else {
            None
        };
        Ok(ImagePage { images, next_marker, total })
    }

    /// Applies `patch` and bumps `updated_at`; `None` when there is no such image. Rules that
    /// depend on who asks (owner changes) are the caller's; that formats change only while the
    /// image waits for its data (`queued`, or `importing` before its import job runs: the job
    /// reads them when it starts) is checked by the statement itself, so an import never runs
    /// with a format changed under it ([`CatalogueError::WrongStatus`]).
    pub async fn update_image(&self, id: &str, patch: &ImagePatch) -> Result<Option<ImageDetail>, CatalogueError> {
        let (properties, tags) = patch.validate()?;
        let sql = format!(
            "UPDATE images SET name = COALESCE(?, name), visibility = COALESCE(?, visibility), \
             protected = COALESCE(?, protected), os_hidden = COALESCE(?, os_hidden), \
             min_disk = COALESCE(?, min_disk), min_ram = COALESCE(?, min_ram), \
             disk_format = COALESCE(?, disk_format), container_format = COALESCE(?, container_format), \
             properties = COALESCE(?, properties), tags = COALESCE(?, tags), updated_at = {TIMESTAMP_NOW} \
             WHERE id = ? AND (? = 0 OR status = 'queued' OR (status = 'importing' AND NOT EXISTS \
             (SELECT 1 FROM jobs WHERE jobs.image_id = images.id AND jobs.kind = 'import' AND jobs.status = 'running')))"
        );
        let formats = patch.disk_format.is_some() || patch.container_format.is_some();
        let done = sqlx::query(&sql)
            .bind(&patch.name)
            .bind(patch.visibility)
            .bind(patch.protected)
            .bind(patch.os_hidden)
            .bind(patch.min_disk)
            .bind(patch.min_ram)
            .bind(&patch.disk_format)
            .bind(&patch.container_format)
            .bind(properties)
            .bind(tags)
            .bind(id)
            .bind(formats)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return match self.image(id).await? {
                Some(image) => {
                    let field = if patch.disk_format.is_some() { "disk_format" } else { "container_format" };
                    Err(CatalogueError::WrongStatus { field, status: image.status })
                }
                None => Ok(None),
            };
        }
        Ok(self.image_detail(id).await?)
    }

    /// Adds a tag (idempotent; Glance's `PUT /v2/images/{id}/tags/{tag}`).
    pub async fn add_tag(&self, id: &str, tag: &str) -> Result<TagChange, CatalogueError> {
        check_tag(tag)?;
        // One statement, so two concurrent adds cannot lose each other's tag.
        let sql = format!(
            "UPDATE images SET tags = json_insert(tags, '$[#]', ?), updated_at = {TIMESTAMP_NOW} \
             WHERE id = ? AND NOT EXISTS (SELECT 1 FROM json_each(images.tags) t WHERE t.value = ?) \
             AND json_array_length(tags) < ?"
        );
        let limit = i64::try_from(MAX_TAGS).unwrap_or(i64::MAX);
        let done = sqlx::query(&sql).bind(tag).bind(id).bind(tag).bind(limit).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(TagChange::Changed);
        }
        let state: Option<(bool, i64)> = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM json_each(images.tags) t WHERE t.value = ?), json_array_length(tags) \
             FROM images WHERE id = ?",
        )
        .bind(tag)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(match state {
            None => TagChange::ImageNotFound,
            Some((true, _)) => TagChange::Unchanged,
            Some((false, _)) => TagChange::LimitReached,
        })
    }

    /// Removes a tag; `Unchanged` when the image did not have it (Glance answers 404 then).
    pub async fn remove_tag(&self, id: &str, tag: &str) -> Result<TagChange, CatalogueError> {
        let sql = format!(
            "UPDATE images SET tags = (SELECT json_group_array(t.value) FROM json_each(images.tags) t WHERE t.value <> ?), \
             updated_at = {TIMESTAMP_NOW} \
             WHERE id = ? AND EXISTS (SELECT 1 FROM json_each(images.tags) t WHERE t.value = ?)"
        );
        let done = sqlx::query(&sql).bind(tag).bind(id).bind(tag).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(TagChange::Changed);
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM images WHERE id = ?").bind(id).fetch_optional(self.pool()).await?;
        Ok(if exists.is_some() { TagChange::Unchanged } else { TagChange::ImageNotFound })
    }

    /// `active` → `deactivated` (Glance's `POST …/actions/deactivate`).
    pub async fn deactivate_image(&self, id: &str) -> Result<StatusChange, DbError> {
        self.status_action(id, ImageStatus::Active, ImageStatus::Deactivated).await
    }

    /// `deactivated` → `active` (Glance's `POST …/actions/reactivate`).
    pub async fn reactivate_image(&self, id: &str) -> Result<StatusChange, DbError> {
        self.status_action(id, ImageStatus::Deactivated, ImageStatus::Active).await
    }

    async fn status_action(&self, id: &str, from: ImageStatus, to: ImageStatus) -> Result<StatusChange, DbError> {
        if self.transition_image(id, &[from], to, "").await? {
            return Ok(StatusChange::Changed);
        }
        let status: Option<ImageStatus> =
            sqlx::query_scalar("SELECT status FROM images WHERE id = ?").bind(id).fetch_optional(self.pool()).await?;
        Ok(match status {
            None => StatusChange::ImageNotFound,
            Some(s) if s == to => StatusChange::Unchanged,
            Some(s) => StatusChange::WrongStatus(s),
        })
    }

    /// Creates a `queued` image with the caller's `id` (Glance's `POST /v2/images` with an `id`;
    /// the caller checks it is a UUID). `None` when an image has that id already, or had it and
    /// was deleted (Glance: 409); [`DbError::ImageQuota`] past `new.max_images`.
    pub async fn create_image_with_id(&self, id: &str, new: &NewImage) -> Result<Option<ImageDetail>, DbError> {
        // One statement: SQLite takes the write lock before it reads, so the tombstone check
        // and the image count see every create that committed before, and none can slip in
        // between (the security issue's parallel creates past `max_images`).
        let done = sqlx::query(
            "INSERT INTO images (id, name, disk_format, container_format, visibility, owner, protected, \
             min_disk, min_ram, properties, tags, created_by) \
             SELECT ?1, ?2, ?3, ?4, COALESCE(?5, 'shared'), ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
             WHERE NOT EXISTS (SELECT 1 FROM deleted_images WHERE id = ?1) \
               AND (?13 IS NULL OR (SELECT COUNT(*) FROM images WHERE owner IS ?6 AND status NOT IN ('deleted', 'killed')) < ?13) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&new.name)
        .bind(&new.disk_format)
        .bind(&new.container_format)
        .bind(new.visibility)
        .bind(&new.owner)
        .bind(new.protected)
        .bind(new.min_disk)
        .bind(new.min_ram)
        .bind(if new.properties.is_empty() { "{}" } else { new.properties.as_str() })
        .bind(if new.tags.is_empty() { "[]" } else { new.tags.as_str() })
        .bind(&new.created_by)
        .bind(new.max_images)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            if let Some(max) = new.max_images {
                let taken: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1) OR EXISTS (SELECT 1 FROM deleted_images WHERE id = ?1)",
                )
                .bind(id)
                .fetch_one(self.pool())
                .await?;
                if !taken {
                    return Err(DbError::ImageQuota { max });
                }
            }
            return Ok(None);
        }
        self.image_detail(id).await
    }

    /// Whether `id` belonged to an image that was deleted (its tombstone).
    pub async fn image_id_deleted(&self, id: &str) -> Result<bool, DbError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deleted_images WHERE id = ?)").bind(id).fetch_one(self.pool()).await?)
    }

    /// Deletes an image's row (its locations, members and jobs go with it) unless it is
    /// protected, and returns where its bytes were, so the caller deletes them after the row is
    /// gone: a crash in between leaves orphan bytes, never a row pointing at missing bytes.
    pub async fn delete_image(&self, id: &str) -> Result<DeleteOutcome, DbError> {
        let mut tx = self.pool().begin().await?;
        // The first statement writes, so the transaction holds the write lock from the start and
        // cannot fail to upgrade a read lock later.
        let mut locations: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM image_locations WHERE image_id = ? \
             AND EXISTS (SELECT 1 FROM images WHERE id = ? AND protected = 0) RETURNING backend, key",
        )
        .bind(id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let gone: Option<(Option<String>,)> =
            sqlx::query_as("DELETE FROM images WHERE id = ? AND protected = 0 RETURNING owner").bind(id).fetch_optional(&mut *tx).await?;
        if let Some((owner,)) = gone {
            // The tombstone: this id is never taken again (see migration 7).
            sqlx::query("INSERT OR IGNORE INTO deleted_images (id, owner) VALUES (?, ?)").bind(id).bind(&owner).execute(&mut *tx).await?;
            tx.commit().await?;
            locations.sort();
            return Ok(DeleteOutcome::Deleted { locations });
        }
        let protected: Option<bool> =
            sqlx::query_scalar("SELECT protected FROM images WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?;
        tx.rollback().await?;
        Ok(if protected.is_some() { DeleteOutcome::Protected } else { DeleteOutcome::NotFound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewImage, NewJob};
    use domain::MemberStatus;

    use crate::test_db::temp_db;

    async fn image(db: &Db, name: &str, owner: Option<&str>, visibility: &str) -> String {
        let new = NewImage {
            name: name.into(),
            owner: owner.map(str::to_owned),
            visibility: Some(visibility.parse().unwrap()),
            ..Default::default()
        };
        db.create_image(&new).await.unwrap().id
    }

    /// Test set-up only: sets columns the public API does not write.
    async fn set(db: &Db, id: &str, assignments: &str) {
        let sql = format!("UPDATE images SET {assignments} WHERE id = ?");
        sqlx::query(&sql).bind(id).execute(db.pool()).await.unwrap();
    }

    async fn list(db: &Db, q: &ImageQuery, visible: Visible<'_>) -> Vec<String> {
        let mut q = q.clone();
        q.limit = Some(MAX_LIST_LIMIT);
        let mut names: Vec<String> = db.query_images(&q, visible).await.unwrap().images.into_iter().map(|i| i.name).collect();
        names.sort();
        names
    }

    fn q() -> ImageQuery {
        ImageQuery::default()
    }

    #[tokio::test]
    async fn deleted_ids_are_never_taken_again() {
        let (_d, db) = temp_db().await;
        let a = db.create_project("alpha", "").await.unwrap().id;
        let b = db.create_project("beta", "").await.unwrap().id;
        let id = "6a1e4c4e-64b6-4c5b-9d0b-8f0b0f4a7e11";
        let new = |owner: &str| NewImage { name: "x".into(), owner: Some(owner.into()), ..Default::default() };
        assert!(db.create_image_with_id(id, &new(&a)).await.unwrap().is_some());
        assert!(matches!(db.delete_image(id).await.unwrap(), DeleteOutcome::Deleted { .. }));
        assert!(db.image_id_deleted(id).await.unwrap());
        assert!(db.create_image_with_id(id, &new(&b)).await.unwrap().is_none(), "another project cannot take the id");
        assert!(db.create_image_with_id(id, &new(&a)).await.unwrap().is_none(), "nor the same one");
        assert!(db.image_detail(id).await.unwrap().is_none());
        assert!(list(&db, &q(), Visible::All).await.is_empty(), "tombstones are not listed");
        assert_eq!(db.project_usage(&a).await.unwrap(), (0, 0), "nor counted");
    }

    #[tokio::test]
    async fn parallel_creates_cannot_pass_the_image_quota() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("alpha", "").await.unwrap().id;
        let new = NewImage { name: "x".into(), owner: Some(p.clone()), max_images: Some(3), ..Default::default() };
        let results = futures::future::join_all((0..12).map(|_| db.create_image(&new))).await;
        let created = results.iter().filter(|r| r.is_ok()).count();
        let refused = results.iter().filter(|r| matches!(r, Err(DbError::ImageQuota { max: 3 }))).count();
        assert_eq!((created, refused), (3, 9));
        assert_eq!(db.project_usage(&p).await.unwrap().0, 3);
    }

    #[tokio::test]
    async fn detail_has_every_column_tags_properties_and_the_owner_name() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("alpha", "").await.unwrap();
        let new = NewImage {
            name: "debian".into(),
            owner: Some(p.id.clone()),
            properties: r#"{"os_distro":"debian","hw_disk_bus":"virtio","n":5}"#.into(),
            tags: r#"["b","a"]"#.into(),
            min_disk: 2,
            ..Default::default()
        };
        let id = db.create_image(&new).await.unwrap().id;
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert_eq!(d.owner_name.as_deref(), Some("alpha"));
        assert_eq!((d.status.as_str(), d.visibility.as_str(), d.min_disk, d.protected, d.os_hidden), ("queued", "shared", 2, false, false));
        assert_eq!(d.tag_list(), ["b", "a"]);
        let props = d.property_map();
        assert_eq!(props.get("os_distro").map(String::as_str), Some("debian"));
        assert_eq!(props.get("n").map(String::as_str), Some("5"));
        assert_eq!(props.len(), 3);
        assert_eq!(db.image_detail("nope").await.unwrap(), None);

        set(&db, &id, "tags = 'not json', properties = '[]'").await;
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert!(d.tag_list().is_empty() && d.property_map().is_empty());
    }

    #[tokio::test]
    async fn each_filter_narrows_the_listing() {
        let (_d, db) = temp_db().await;
        let a = db.create_project("a", "").await.unwrap().id;
        let b = db.create_project("b", "").await.unwrap().id;
        let one = image(&db, "one", Some(&a), "private").await;
        let two = image(&db, "two", Some(&a), "public").await;
        let three = image(&db, "three", Some(&b), "private").await;
        let four = image(&db, "four", None, "shared").await;
        set(
            &db,
            &one,
            "status = 'active', disk_format = 'qcow2', container_format = 'bare', size = 100, protected = 1, \
             tags = '[\"x\",\"y\"]', properties = '{\"os_distro\":\"debian\",\"a.b:c-d\":\"1\"}', checksum = 'md5one', \
             created_at = '2024-01-01T00:00:00Z', updated_at = '2024-06-01T00:00:00Z'",
        )
        .await;
        set(
            &db,
            &two,
            "status = 'active', disk_format = 'raw', container_format = 'ova', size = 200, \
             tags = '[\"x\"]', properties = '{\"os_distro\":\"ubuntu\"}', os_hash_value = 'sha-two', \
             created_at = '2024-02-01T00:00:00Z', updated_at = '2024-02-01T00:00:00Z'",
        )
        .await;
        set(
            &db,
            &three,
            "status = 'killed', disk_format = 'vmdk', size = NULL, \
             created_at = '2024-03-01T12:30:00Z', updated_at = '2024-03-01T12:30:00Z'",
        )
        .await;
        set(&db, &four, "created_at = '2024-04-01T00:00:00Z'").await;
        let all = Visible::All;

        assert_eq!(list(&db, &q(), all).await, ["four", "one", "three", "two"]);
        assert_eq!(list(&db, &ImageQuery { ids: vec![one.clone(), two.clone()], ..q() }, all).await, ["one", "two"]);
        assert_eq!(list(&db, &ImageQuery { names: vec!["one".into()], ..q() }, all).await, ["one"]);
        assert_eq!(list(&db, &ImageQuery { names: vec!["one".into(), "three".into(), "x".into()], ..q() }, all).await, ["one", "three"]);
        assert_eq!(list(&db, &ImageQuery { statuses: Some(vec![ImageStatus::Active]), ..q() }, all).await, ["one", "two"]);
        assert_eq!(
            list(&db, &ImageQuery { statuses: Some(vec![ImageStatus::Killed, ImageStatus::Queued]), ..q() }, all).await,
            ["four", "three"]
        );
        assert_eq!(list(&db, &ImageQuery { disk_formats: vec!["qcow2".into(), "vmdk".into()], ..q() }, all).await, ["one", "three"]);
        assert_eq!(list(&db, &ImageQuery { container_formats: vec!["ova".into()], ..q() }, all).await, ["two"]);
        assert_eq!(list(&db, &ImageQuery { owners: vec![b.clone()], ..q() }, all).await, ["three"]);
        assert_eq!(list(&db, &ImageQuery { owners: vec![a.clone(), b.clone()], ..q() }, all).await, ["one", "three", "two"]);
        assert_eq!(list(&db, &ImageQuery { tags: vec!["x".into()], ..q() }, all).await, ["one", "two"]);
        assert_eq!(list(&db, &ImageQuery { tags: vec!["x".into(), "y".into()], ..q() }, all).await, ["one"]);
        assert!(list(&db, &ImageQuery { tags: vec!["x".into(), "z".into()], ..q() }, all).await.is_empty());
        assert_eq!(list(&db, &ImageQuery { size_min: Some(100), ..q() }, all).await, ["one", "two"]);
        assert_eq!(list(&db, &ImageQuery { size_min: Some(101), ..q() }, all).await, ["two"]);
        assert_eq!(list(&db, &ImageQuery { size_max: Some(200), ..q() }, all).await, ["one", "two"], "NULL sizes never match a bound");
        assert_eq!(list(&db, &ImageQuery { size_min: Some(100), size_max: Some(100), ..q() }, all).await, ["one"]);
        assert_eq!(list(&db, &ImageQuery { protected: Some(true), ..q() }, all).await, ["one"]);
        assert_eq!(list(&db, &ImageQuery { protected: Some(false), ..q() }, all).await, ["four", "three", "two"]);
        assert_eq!(list(&db, &ImageQuery { checksum: Some("md5one".into()), ..q() }, all).await, ["one"]);
        assert_eq!(list(&db, &ImageQuery { os_hash_value: Some("sha-two".into()), ..q() }, all).await, ["two"]);
        let prop = |k: &str, v: &str| ImageQuery { properties: vec![(k.into(), v.into())], ..q() };
        assert_eq!(list(&db, &prop("os_distro", "debian"), all).await, ["one"]);
        assert_eq!(list(&db, &prop("a.b:c-d", "1"), all).await, ["one"], "keys with . : - are quoted in the path");
        assert!(list(&db, &prop("os_distro", "fedora"), all).await.is_empty());
        for bad in ["", "a b", "a\"b", "$.x[0]", &"k".repeat(256)] {
            let err = db.query_images(&prop(bad, "1"), all).await.unwrap_err();
            assert!(matches!(err, CatalogueError::InvalidFilter(_)), "{bad:?}: {err}");
        }

        let time = |(op, at): (TimeOp, &str)| TimeFilter::new(op, at).unwrap();
        let created = |fs: &[(TimeOp, &str)]| ImageQuery { created_at: fs.iter().map(|f| time(*f)).collect(), ..q() };
        assert_eq!(list(&db, &created(&[(TimeOp::Gt, "2024-02-01T00:00:00Z")]), all).await, ["four", "three"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Gte, "2024-02-01T00:00:00Z")]), all).await, ["four", "three", "two"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Lt, "2024-02-01T00:00:00Z")]), all).await, ["one"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Lte, "2024-02-01")]), all).await, ["one", "two"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Eq, "2024-03-01T14:30:00+02:00")]), all).await, ["three"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Eq, "2024-03-01T12:30:00Z")]), all).await, ["three"], "a bare time means eq");
        assert_eq!(list(&db, &created(&[(TimeOp::Neq, "2024-03-01T12:30:00Z")]), all).await, ["four", "one", "two"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Gte, "2024-01-15"), (TimeOp::Lt, "2024-04-01T00:00:00Z")]), all).await, ["three", "two"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Gte, "2024-03-01T12:29:59.5Z")]), all).await, ["four", "three"]);
        assert_eq!(list(&db, &created(&[(TimeOp::Lt, "2024-03-01T12:30:00.5Z")]), all).await, ["one", "three", "two"]);
        assert!(list(&db, &created(&[(TimeOp::Eq, "2024-03-01T12:30:00.5Z")]), all).await.is_empty());
        assert_eq!(list(&db, &created(&[(TimeOp::Neq, "2024-03-01T12:30:00.5Z")]), all).await.len(), 4);
        let updated = ImageQuery { updated_at: vec![time((TimeOp::Gt, "2024-05-01T00:00:00Z"))], ..q() };
        assert_eq!(list(&db, &updated, all).await, ["four", "one"], "four was created now");
    }

    #[tokio::test]
    async fn name_search_is_a_case_insensitive_substring_with_wildcards_escaped() {
        let (_d, db) = temp_db().await;
        for name in ["Debian 12", "debian-11", "50% off", "a_b", "axb", r"back\slash"] {
            image(&db, name, None, "public").await;
        }
        let search = |s: &str| ImageQuery { name_contains: Some(s.into()), ..q() };
        assert_eq!(list(&db, &search("DEBIAN"), Visible::All).await, ["Debian 12", "debian-11"]);
        assert_eq!(list(&db, &search("%"), Visible::All).await, ["50% off"]);
        assert_eq!(list(&db, &search("_"), Visible::All).await, ["a_b"]);
        assert_eq!(list(&db, &search(r"\"), Visible::All).await, [r"back\slash"]);
        assert_eq!(list(&db, &search(""), Visible::All).await.len(), 6, "an empty search filters nothing");
    }

    #[test]
    fn sort_keys_and_filters_parse_glance_names() {
        for k in SortKey::ALL {
            assert_eq!(SortKey::parse(k.as_str()).unwrap(), k);
        }
        assert!(SortKey::parse("name; DROP TABLE images").is_err());
        assert_eq!(SortDir::parse("desc").unwrap(), SortDir::Desc);
        assert!(SortDir::parse("DESC").is_err());
        assert_eq!(VisibilityFilter::parse("all").unwrap(), VisibilityFilter::All);
        assert!(VisibilityFilter::parse("everyone").is_err());
        assert_eq!(MemberStatusFilter::parse("pending").unwrap(), MemberStatusFilter::Pending);
        assert!(MemberStatusFilter::parse("maybe").is_err());
        assert_eq!(MemberStatusFilter::default(), MemberStatusFilter::Accepted);
    }

    /// SQLite's order for one key: NULL first, integers numerically, text bytewise (BINARY).
    fn cmp_values(a: &Arg, b: &Arg) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        match (a, b) {
            (Arg::Null, Arg::Null) => Equal,
            (Arg::Null, _) => Less,
            (_, Arg::Null) => Greater,
            (Arg::Int(x), Arg::Int(y)) => x.cmp(y),
            (Arg::Text(x), Arg::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
            _ => unreachable!("one key has one type"),
        }
    }

    fn sorted(mut rows: Vec<ImageDetail>, order: &[(SortKey, SortDir)]) -> Vec<String> {
        rows.sort_by(|a, b| {
            order
                .iter()
                .map(|&(k, d)| {
                    let o = cmp_values(&k.value_of(a), &k.value_of(b));
                    if d == SortDir::Desc {
                        o.reverse()
                    } else {
                        o
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        rows.into_iter().map(|r| r.id).collect()
    }

    /// A small deterministic generator (no extra dependency for randomness).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    async fn random_catalogue(db: &Db, rng: &mut Lcg, n: usize) -> (String, String) {
        let a = db.create_project("pa", "").await.unwrap().id;
        let b = db.create_project("pb", "").await.unwrap().id;
        for i in 0..n {
            let owner = rng.pick(&[Some(a.as_str()), Some(b.as_str()), None]).map(str::to_owned);
            let vis = *rng.pick(&["public", "private", "shared", "community"]);
            let name = *rng.pick(&["alpha", "beta", "Beta", "gamma", ""]);
            let id = image(db, name, owner.as_deref(), vis).await;
            let size = rng.pick(&["NULL", "0", "10", "20"]);
            let vsize = rng.pick(&["NULL", "5", "50"]);
            let disk = rng.pick(&["NULL", "'qcow2'", "'raw'"]);
            let container = rng.pick(&["NULL", "'bare'"]);
            let created = rng.pick(&["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]);
            let updated = rng.pick(&["2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z"]);
            let status = rng.pick(&["active", "queued", "killed"]);
            set(
                db,
                &id,
                &format!(
                    "size = {size}, virtual_size = {vsize}, disk_format = {disk}, container_format = {container}, \
                     created_at = '{created}', updated_at = '{updated}', status = '{status}', min_disk = {}, min_ram = {}",
                    rng.below(2),
                    rng.below(3) * 512
                ),
            )
            .await;
            if i % 7 == 0 {
                db.add_image_member(&id, &a).await.unwrap();
                db.set_image_member_status(&id, &a, MemberStatus::Accepted).await.unwrap();
            }
        }
        (a, b)
    }

    async fn page_through(db: &Db, query: &ImageQuery, visible: Visible<'_>, limit: u32) -> Vec<String> {
        let mut seen = Vec::new();
        let mut marker = None;
        for _ in 0..1000 {
            let page = db.query_images(&ImageQuery { marker: marker.clone(), limit: Some(limit), ..query.clone() }, visible).await.unwrap();
            assert!(page.images.len() <= limit as usize);
            seen.extend(page.images.iter().map(|i| i.id.clone()));
            match page.next_marker {
                Some(m) => {
                    assert_eq!(page.images.len(), limit as usize, "only full pages have a next page");
                    assert_eq!(Some(&m), seen.last());
                    marker = Some(m);
                }
                None => return seen,
            }
        }
        panic!("paging did not end");
    }

    #[tokio::test]
    async fn every_sort_key_orders_both_ways_with_nulls_first_ascending() {
        let (_d, db) = temp_db().await;
        let mut rng = Lcg(7);
        random_catalogue(&db, &mut rng, 30).await;
        let everything = ImageQuery { visibility: Some(VisibilityFilter::All), limit: Some(MAX_LIST_LIMIT), ..q() };
        let rows = db.query_images(&everything, Visible::All).await.unwrap().images;
        assert_eq!(rows.len(), 30);
        for key in SortKey::ALL {
            for dir in [SortDir::Asc, SortDir::Desc] {
                let query = ImageQuery { sort: vec![(key, dir)], ..everything.clone() };
                let got: Vec<String> = db.query_images(&query, Visible::All).await.unwrap().images.into_iter().map(|i| i.id).collect();
                let want = sorted(rows.clone(), &query.order());
                assert_eq!(got, want, "{key:?} {dir:?}");
            }
        }
        let default: Vec<String> = db.query_images(&everything, Visible::All).await.unwrap().images.into_iter().map(|i| i.id).collect();
        assert_eq!(default, sorted(rows, &[(SortKey::CreatedAt, SortDir::Desc), (SortKey::Id, SortDir::Desc)]));
    }

    #[tokio::test]
    async fn marker_paging_yields_every_row_once_in_order_for_random_sorts() {
        let (_d, db) = temp_db().await;
        let mut rng = Lcg(2026);
        let (a, _b) = random_catalogue(&db, &mut rng, 60).await;
        let dirs = [SortDir::Asc, SortDir::Desc];
        for round in 0..60 {
            let keys = 1 + rng.below(3) as usize;
            let mut sort = Vec::new();
            for _ in 0..keys {
                sort.push((*rng.pick(&SortKey::ALL), *rng.pick(&dirs)));
            }
            let (query, visible) = if round % 3 == 0 {
                (ImageQuery { sort, ..q() }, Visible::Project(a.as_str()))
            } else {
                (ImageQuery { sort, visibility: Some(VisibilityFilter::All), ..q() }, Visible::All)
            };
            let full = db.query_images(&ImageQuery { limit: Some(MAX_LIST_LIMIT), ..query.clone() }, visible).await.unwrap();
            let want: Vec<String> = full.images.iter().map(|i| i.id.clone()).collect();
            assert_eq!(want, sorted(full.images.clone(), &query.order()), "round {round}: {:?}", query.sort);
            let limit = 1 + rng.below(9) as u32;
            let got = page_through(&db, &query, visible, limit).await;
            assert_eq!(got, want, "round {round}: {:?} limit {limit}", query.sort);
            assert_eq!(full.total, want.len() as u64);
        }
    }

    #[tokio::test]
    async fn limits_default_to_25_are_capped_and_total_ignores_paging() {
        let (_d, db) = temp_db().await;
        for i in 0..30 {
            image(&db, &format!("i{i:02}"), None, "public").await;
        }
        let page = db.query_images(&q(), Visible::All).await.unwrap();
        assert_eq!((page.images.len(), page.total), (25, 30));
        assert!(page.next_marker.is_some());
        let page = db.query_images(&ImageQuery { limit: Some(u32::MAX), ..q() }, Visible::All).await.unwrap();
        assert_eq!((page.images.len(), page.next_marker), (30, None));
        let page = db.query_images(&ImageQuery { limit: Some(30), ..q() }, Visible::All).await.unwrap();
        assert_eq!(page.next_marker, None, "exactly a page left: no next page");
        let page = db.query_images(&ImageQuery { limit: Some(0), ..q() }, Visible::All).await.unwrap();
        assert_eq!((page.images.len(), page.next_marker, page.total), (0, None, 30));
        let sort = vec![(SortKey::Name, SortDir::Asc)];
        let first = db.query_images(&ImageQuery { limit: Some(10), sort: sort.clone(), ..q() }, Visible::All).await.unwrap();
        let second = db.query_images(&ImageQuery { limit: Some(10), sort, marker: first.next_marker, ..q() }, Visible::All).await.unwrap();
        assert_eq!(second.images[0].name, "i10");
        assert_eq!(second.total, 30);
    }

    #[tokio::test]
    async fn visibility_and_member_status_follow_glance() {
        let (_d, db) = temp_db().await;
        let a = db.create_project("a", "").await.unwrap().id;
        let b = db.create_project("b", "").await.unwrap().id;
        image(&db, "a-private", Some(&a), "private").await;
        image(&db, "a-public", Some(&a), "public").await;
        image(&db, "a-community", Some(&a), "community").await;
        let accepted = image(&db, "a-shared-accepted", Some(&a), "shared").await;
        let pending = image(&db, "a-shared-pending", Some(&a), "shared").await;
        let rejected = image(&db, "a-shared-rejected", Some(&a), "shared").await;
        image(&db, "a-shared-unshared", Some(&a), "shared").await;
        image(&db, "b-private", Some(&b), "private").await;
        image(&db, "b-community", Some(&b), "community").await;
        image(&db, "b-shared", Some(&b), "shared").await;
        image(&db, "nobody-public", None, "public").await;
        for (id, status) in [(&accepted, MemberStatus::Accepted), (&pending, MemberStatus::Pending), (&rejected, MemberStatus::Rejected)] {
            db.add_image_member(id, &b).await.unwrap();
            db.set_image_member_status(id, &b, status).await.unwrap();
        }
        let pb = Visible::Project(&b);
        let vis = |v: VisibilityFilter| ImageQuery { visibility: Some(v), ..q() };
        let member = |m: MemberStatusFilter| ImageQuery { member_status: m, ..q() };

        assert_eq!(
            list(&db, &q(), pb).await,
            ["a-public", "a-shared-accepted", "b-community", "b-private", "b-shared", "nobody-public"],
            "default: own (community too), public, accepted shares"
        );
        assert_eq!(
            list(&db, &member(MemberStatusFilter::Pending), pb).await,
            ["a-public", "a-shared-pending", "b-community", "b-private", "b-shared", "nobody-public"]
        );
        assert_eq!(
            list(&db, &member(MemberStatusFilter::All), pb).await,
            [
                "a-public",
                "a-shared-accepted",
                "a-shared-pending",
                "a-shared-rejected",
                "b-community",
                "b-private",
                "b-shared",
                "nobody-public"
            ]
        );
        assert_eq!(list(&db, &vis(VisibilityFilter::Community), pb).await, ["a-community", "b-community"]);
        assert_eq!(list(&db, &vis(VisibilityFilter::Shared), pb).await, ["a-shared-accepted", "b-shared"]);
        assert_eq!(
            list(&db, &ImageQuery { member_status: MemberStatusFilter::Rejected, ..vis(VisibilityFilter::Shared) }, pb).await,
            ["a-shared-rejected", "b-shared"]
        );
        assert_eq!(list(&db, &vis(VisibilityFilter::Private), pb).await, ["b-private"]);
        assert_eq!(list(&db, &vis(VisibilityFilter::Public), pb).await, ["a-public", "nobody-public"]);
        assert_eq!(
            list(&db, &vis(VisibilityFilter::All), pb).await,
            ["a-community", "a-public", "a-shared-accepted", "b-community", "b-private", "b-shared", "nobody-public"]
        );

        assert_eq!(list(&db, &q(), Visible::All).await.len(), 9, "admins' default view leaves out community images");
        assert_eq!(list(&db, &vis(VisibilityFilter::All), Visible::All).await.len(), 11);
        assert_eq!(list(&db, &vis(VisibilityFilter::Private), Visible::All).await, ["a-private", "b-private"]);
        assert_eq!(list(&db, &q(), Visible::PublicOnly).await, ["a-public", "nobody-public"]);
        assert_eq!(list(&db, &vis(VisibilityFilter::Community), Visible::PublicOnly).await, ["a-community", "b-community"]);
        assert!(list(&db, &vis(VisibilityFilter::Shared), Visible::PublicOnly).await.is_empty());

        // The marker must be visible to the caller, whatever the filters.
        let a_private = db.query_images(&ImageQuery { names: vec!["a-private".into()], ..q() }, Visible::All).await.unwrap();
        let marker = Some(a_private.images[0].id.clone());
        let err = db.query_images(&ImageQuery { marker: marker.clone(), ..q() }, pb).await.unwrap_err();
        assert!(matches!(err, CatalogueError::MarkerNotFound), "{err}");
        assert!(db.query_images(&ImageQuery { marker, ..q() }, Visible::Project(&a)).await.is_ok());
        let pending_marker = ImageQuery { marker: Some(pending.clone()), ..q() };
        assert!(db.query_images(&pending_marker, pb).await.is_ok(), "a pending share is visible as a marker");
        let err = db.query_images(&ImageQuery { marker: Some("no-such-id".into()), ..q() }, Visible::All).await.unwrap_err();
        assert!(matches!(err, CatalogueError::MarkerNotFound), "{err}");
    }

    #[tokio::test]
    async fn hidden_images_are_listed_only_when_asked_for() {
        let (_d, db) = temp_db().await;
        image(&db, "shown", None, "public").await;
        let hidden = image(&db, "hidden", None, "public").await;
        set(&db, &hidden, "os_hidden = 1").await;
        assert_eq!(list(&db, &q(), Visible::PublicOnly).await, ["shown"]);
        assert_eq!(list(&db, &ImageQuery { os_hidden: Some(false), ..q() }, Visible::All).await, ["shown"]);
        assert_eq!(list(&db, &ImageQuery { os_hidden: Some(true), ..q() }, Visible::All).await, ["hidden"]);
        assert_eq!(db.query_images(&q(), Visible::All).await.unwrap().total, 1);
    }

    #[tokio::test]
    async fn patches_replace_fields_tags_and_properties_and_bump_updated_at() {
        let (_d, db) = temp_db().await;
        let id = image(&db, "before", None, "private").await;
        set(&db, &id, "updated_at = '2000-01-01T00:00:00Z', tags = '[\"old\"]', properties = '{\"k\":\"v\"}'").await;
        let patch = ImagePatch {
            name: Some("after".into()),
            visibility: Some(Visibility::Community),
            protected: Some(true),
            os_hidden: Some(true),
            min_disk: Some(10),
            min_ram: Some(512),
            disk_format: Some("qcow2".into()),
            container_format: Some("bare".into()),
            properties: Some(BTreeMap::from([("os_distro".into(), "debian".into()), ("x.y".into(), "\"quoted\"".into())])),
            tags: Some(vec!["t1".into(), "t2".into(), "t1".into()]),
        };
        let d = db.update_image(&id, &patch).await.unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.visibility.as_str(), d.protected, d.os_hidden), ("after", "community", true, true));
        assert_eq!(
            (d.min_disk, d.min_ram, d.disk_format.as_deref(), d.container_format.as_deref()),
            (10, 512, Some("qcow2"), Some("bare"))
        );
        assert_eq!(d.tag_list(), ["t1", "t2"], "tags are a set");
        assert_eq!(d.property_map(), patch.properties.clone().unwrap());
        assert!(d.updated_at.as_str() > "2000-01-01T00:00:00Z");

        let d = db.update_image(&id, &ImagePatch { min_ram: Some(0), ..Default::default() }).await.unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.min_ram, d.tag_list().len()), ("after", 0, 2), "None leaves a field alone");
        assert_eq!(db.update_image("nope", &ImagePatch::default()).await.unwrap(), None);

        for bad in [
            ImagePatch { name: Some("n".repeat(256)), ..Default::default() },
            ImagePatch { min_disk: Some(-1), ..Default::default() },
            ImagePatch { tags: Some(vec!["t".repeat(256)]), ..Default::default() },
            ImagePatch { tags: Some(vec![String::new()]), ..Default::default() },
            ImagePatch { properties: Some(BTreeMap::from([("bad key".into(), "v".into())])), ..Default::default() },
        ] {
            assert!(matches!(db.update_image(&id, &bad).await, Err(CatalogueError::InvalidValue(_))), "{bad:?}");
        }
        let many_tags = ImagePatch { tags: Some((0..=MAX_TAGS).map(|i| format!("t{i}")).collect()), ..Default::default() };
        assert!(matches!(db.update_image(&id, &many_tags).await, Err(CatalogueError::LimitExceeded(_))));
        let many_props =
            ImagePatch { properties: Some((0..=MAX_PROPERTIES).map(|i| (format!("k{i}"), String::new())).collect()), ..Default::default() };
        assert!(matches!(db.update_image(&id, &many_props).await, Err(CatalogueError::LimitExceeded(_))));
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().tag_list(), ["t1", "t2"], "refused patches change nothing");

        // Once the image's data has arrived, the statement itself refuses a format change (an
        // import that started after the caller read `queued` is not changed under it), and
        // leaves the rest of the patch unapplied too; other fields still change.
        set(&db, &id, "status = 'active'").await;
        let late = ImagePatch { name: Some("late".into()), disk_format: Some("raw".into()), ..Default::default() };
        match db.update_image(&id, &late).await {
            Err(CatalogueError::WrongStatus { field: "disk_format", status }) => assert_eq!(status, ImageStatus::Active),
            other => panic!("{other:?}"),
        }
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.disk_format.as_deref()), ("after", Some("qcow2")));
        let d = db.update_image(&id, &ImagePatch { name: Some("renamed".into()), ..Default::default() }).await.unwrap().unwrap();
        assert_eq!(d.name, "renamed");
        // `importing` before the import job runs (a web-download still arriving): formats may
        // change; once the job runs (it read them at its start), they may not.
        set(&db, &id, "status = 'importing'").await;
        let raw = ImagePatch { disk_format: Some("raw".into()), ..Default::default() };
        assert_eq!(db.update_image(&id, &raw).await.unwrap().unwrap().disk_format.as_deref(), Some("raw"));
        let job = NewJob::import(id.clone(), "local");
        let job = db.create_job(&job).await.unwrap();
        assert_eq!(db.claim_job().await.unwrap().map(|j| j.id), Some(job.id), "the job runs");
        let qcow2 = ImagePatch { disk_format: Some("qcow2".into()), ..Default::default() };
        assert!(matches!(db.update_image(&id, &qcow2).await, Err(CatalogueError::WrongStatus { .. })));
    }

    #[tokio::test]
    async fn tags_are_added_and_removed_idempotently() {
        let (_d, db) = temp_db().await;
        let id = image(&db, "x", None, "private").await;
        set(&db, &id, "updated_at = '2000-01-01T00:00:00Z'").await;
        assert_eq!(db.add_tag(&id, "blue").await.unwrap(), TagChange::Changed);
        assert_eq!(db.add_tag(&id, "blue").await.unwrap(), TagChange::Unchanged);
        assert_eq!(db.add_tag(&id, "ünïcode, with \"quotes\"").await.unwrap(), TagChange::Changed);
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert_eq!(d.tag_list(), ["blue", "ünïcode, with \"quotes\""]);
        assert!(d.updated_at.as_str() > "2000-01-01T00:00:00Z");
        assert_eq!(list(&db, &ImageQuery { tags: vec!["ünïcode, with \"quotes\"".into()], ..q() }, Visible::All).await, ["x"]);
        assert_eq!(db.remove_tag(&id, "blue").await.unwrap(), TagChange::Changed);
        assert_eq!(db.remove_tag(&id, "blue").await.unwrap(), TagChange::Unchanged);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().tag_list(), ["ünïcode, with \"quotes\""]);
        assert_eq!(db.remove_tag(&id, "ünïcode, with \"quotes\"").await.unwrap(), TagChange::Changed);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().tags, "[]");
        assert_eq!(db.add_tag("nope", "blue").await.unwrap(), TagChange::ImageNotFound);
        assert_eq!(db.remove_tag("nope", "blue").await.unwrap(), TagChange::ImageNotFound);
        assert!(matches!(db.add_tag(&id, &"é".repeat(256)).await, Err(CatalogueError::InvalidValue(_))));
        assert_eq!(db.add_tag(&id, &"é".repeat(255)).await.unwrap(), TagChange::Changed, "the limit counts characters");

        let full = ImagePatch { tags: Some((0..MAX_TAGS).map(|i| format!("t{i}")).collect()), ..Default::default() };
        db.update_image(&id, &full).await.unwrap();
        assert_eq!(db.add_tag(&id, "one-more").await.unwrap(), TagChange::LimitReached);
        assert_eq!(db.add_tag(&id, "t5").await.unwrap(), TagChange::Unchanged, "an existing tag is fine at the limit");
    }

    #[tokio::test]
    async fn deactivate_and_reactivate_move_only_between_active_and_deactivated() {
        let (_d, db) = temp_db().await;
        let id = image(&db, "x", None, "private").await;
        assert_eq!(db.deactivate_image(&id).await.unwrap(), StatusChange::WrongStatus(ImageStatus::Queued));
        assert_eq!(db.reactivate_image(&id).await.unwrap(), StatusChange::WrongStatus(ImageStatus::Queued));
        set(&db, &id, "status = 'active'").await;
        assert_eq!(db.reactivate_image(&id).await.unwrap(), StatusChange::Unchanged);
        assert_eq!(db.deactivate_image(&id).await.unwrap(), StatusChange::Changed);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().status, ImageStatus::Deactivated);
        assert_eq!(db.deactivate_image(&id).await.unwrap(), StatusChange::Unchanged);
        assert_eq!(db.reactivate_image(&id).await.unwrap(), StatusChange::Changed);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().status, ImageStatus::Active);
        assert_eq!(db.deactivate_image("nope").await.unwrap(), StatusChange::ImageNotFound);
        assert_eq!(db.reactivate_image("nope").await.unwrap(), StatusChange::ImageNotFound);
    }

    #[tokio::test]
    async fn delete_refuses_protected_images_and_returns_the_locations() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("p", "").await.unwrap().id;
        let id = image(&db, "x", Some(&p), "shared").await;
        let other = image(&db, "y", Some(&p), "shared").await;
        db.add_image_member(&id, &p).await.unwrap();
        for (img, backend, key) in [(&id, "local", "images/x"), (&id, "ceph", "rbd/x"), (&other, "local", "images/y")] {
            sqlx::query("INSERT INTO image_locations (image_id, backend, key, disk_format, size) VALUES (?, ?, ?, 'raw', 1)")
                .bind(img)
                .bind(backend)
                .bind(key)
                .execute(db.pool())
                .await
                .unwrap();
        }
        db.update_image(&id, &ImagePatch { protected: Some(true), ..Default::default() }).await.unwrap();
        assert_eq!(db.delete_image(&id).await.unwrap(), DeleteOutcome::Protected);
        let kept: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM image_locations WHERE image_id = ?").bind(&id).fetch_one(db.pool()).await.unwrap();
        assert_eq!(kept, 2, "a refused delete keeps the locations");

        db.update_image(&id, &ImagePatch { protected: Some(false), ..Default::default() }).await.unwrap();
        let locations = vec![("ceph".to_owned(), "rbd/x".to_owned()), ("local".to_owned(), "images/x".to_owned())];
        assert_eq!(db.delete_image(&id).await.unwrap(), DeleteOutcome::Deleted { locations });
        assert_eq!(db.image_detail(&id).await.unwrap(), None);
        assert!(db.image_members(&id).await.unwrap().is_empty());
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM image_locations").fetch_one(db.pool()).await.unwrap();
        assert_eq!(left, 1, "other images' locations stay");
        assert_eq!(db.delete_image(&id).await.unwrap(), DeleteOutcome::NotFound);
        assert_eq!(db.delete_image(&other).await.unwrap(), DeleteOutcome::Deleted { locations: vec![("local".into(), "images/y".into())] });
    }
}
