//! The image catalogue's queries: filtered, sorted, marker-paged listing; the detail row;
//! metadata updates, tags, status transitions and deletion.
