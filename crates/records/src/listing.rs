//! The image listing: filtered, sorted, marker-paged, for the dashboard and the Glance API.
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

use domain::ImageStatus;
use sqlx::sqlite::SqliteArguments;
use sqlx::Sqlite;

use crate::catalogue::{valid_property_key, CatalogueError, ImageDetail, DETAIL_COLUMNS, DETAIL_FROM};
use crate::{Db, Visible, MAX_LIST_LIMIT};

/// Rows per page when the caller does not say (Glance's `limit_param_default`).
pub const DEFAULT_LIST_LIMIT: u32 = 25;

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
        let text = |s: Option<&str>| s.map_or(Arg::Null, |s| Arg::Text(s.to_owned()));
        let int = |n: Option<i64>| n.map_or(Arg::Null, Arg::Int);
        match self {
            SortKey::Name => Arg::Text(row.name.clone()),
            SortKey::Status => Arg::Text(row.status.as_str().to_owned()),
            SortKey::ContainerFormat => text(row.container_format.map(|c| c.as_str())),
            SortKey::DiskFormat => text(row.disk_format.map(|d| d.as_str())),
            SortKey::Size => int(row.size),
            SortKey::VirtualSize => int(row.virtual_size),
            SortKey::Id => Arg::Text(row.id.clone()),
            SortKey::CreatedAt => Arg::Text(row.created_at.clone()),
            SortKey::UpdatedAt => Arg::Text(row.updated_at.clone()),
            SortKey::Visibility => Arg::Text(row.visibility.as_str().to_owned()),
            SortKey::MinDisk => Arg::Int(row.min_disk),
            SortKey::MinRam => Arg::Int(row.min_ram),
            SortKey::Owner => text(row.owner.as_deref()),
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

impl Db {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::MemberStatus;

    use crate::test_db::{image, list, q, set, temp_db};

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
}
