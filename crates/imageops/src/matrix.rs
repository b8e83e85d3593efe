//! Editing the storage-compatibility matrix: one cell, by an administrator, with the rules that
//! keep a cell meaningful, audited.

use accounts::Authn;
use domain::{DiskFormat, ImageFormat, MatrixAction, StorageKind, CONVERT_TARGETS};
use policy::Action;

use crate::{Error, Images};

/// The longest reason a cell may give (it is shown in every cell's tooltip and on image pages).
pub const MAX_REASON_CHARS: usize = 500;

/// A cell as an administrator asked for it, before the rules.
#[derive(Clone, Debug, Default)]
pub struct CellRequest<'a> {
    pub kind: &'a str,
    pub format: &'a str,
    pub action: &'a str,
    /// Only for `convert`; blank means none.
    pub target_format: Option<&'a str>,
    pub reason: &'a str,
}

/// Checks a requested cell: a known column and row, an action that makes sense for the format
/// (only disks convert, only packages extract, nothing converts to itself), and a reason.
pub fn check_cell(req: &CellRequest<'_>) -> Result<Cell, Error> {
    let bad = |m: String| Err(Error::Invalid(m));
    let Some(kind) = StorageKind::parse(req.kind) else { return bad(format!("Unknown backend kind '{}'.", req.kind)) };
    let Some(format) = ImageFormat::parse(req.format) else { return bad(format!("Unknown format '{}'.", req.format)) };
    let Some(action) = MatrixAction::parse(req.action) else { return bad(format!("Unknown action '{}'.", req.action)) };
    let target = req.target_format.map(str::trim).filter(|t| !t.is_empty());
    let target = match action {
        MatrixAction::Convert => {
            let Some(t) = target else { return bad("Choose the format to convert to.".into()) };
            let Some(to) = DiskFormat::parse(t).filter(|d| CONVERT_TARGETS.contains(&d.as_str())) else {
                return bad(format!("Hangar cannot convert to '{t}'; choose qcow2 or raw."));
            };
            if ImageFormat::from(to) == format {
                return bad(format!("Converting {format} to itself is 'native'."));
            }
            if format.disk().is_none() || matches!(format, ImageFormat::Iso | ImageFormat::Aki | ImageFormat::Ari) {
                return bad(format!("{format} is not a disk Hangar can convert."));
            }
            Some(to)
        }
        MatrixAction::Extract if format.package().is_none() => {
            return bad("Only packages (OVA, UEC) can be extracted.".into());
        }
        MatrixAction::Native | MatrixAction::Refuse | MatrixAction::Extract => None,
    };
    let reason = req.reason.trim();
    if reason.is_empty() {
        return bad("Give the reason users will see for this cell.".into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return bad(format!("Keep the reason under {MAX_REASON_CHARS} characters."));
    }
    Ok(Cell { kind, format, action, target, reason: reason.to_owned() })
}

/// A cell that passed [`check_cell`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub kind: StorageKind,
    pub format: ImageFormat,
    pub action: MatrixAction,
    pub target: Option<DiskFormat>,
    pub reason: String,
}

impl Images {
    /// Sets one cell of the matrix (administrators: `EditStorageMatrix`), checked by
    /// [`check_cell`], recorded as set by the caller, and audited (`storage.matrix`).
    pub async fn set_matrix_cell(&self, authn: &Authn, req: &CellRequest<'_>) -> Result<records::PolicyCell, Error> {
        self.authorize(authn, &Action::EditStorageMatrix)?;
        let Cell { kind, format, action, target, reason } = check_cell(req)?;
        let by = authn.principal.as_ref().map_or("", |p| p.username.as_str());
        let cell = self.db.set_policy_cell(kind, format, action, target, &reason, by).await?;
        let label = match (cell.action, cell.target_format) {
            (MatrixAction::Convert, Some(t)) => format!("convert to {t}"),
            (a, _) => a.as_str().to_owned(),
        };
        self.audit(authn, "storage.matrix", "matrix", &format!("{kind}/{format}"), &label).await?;
        Ok(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: &str, format: &str, action: &str, target: Option<&str>, reason: &str) -> Result<String, String> {
        check_cell(&CellRequest { kind, format, action, target_format: target, reason })
            .map(|c| format!("{} {} {} {:?} {}", c.kind, c.format, c.action, c.target.map(DiskFormat::as_str), c.reason))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_cell_must_make_sense_for_its_format() {
        assert_eq!(check("rbd", "vdi", "convert", Some(" raw "), " why ").unwrap(), "rbd vdi convert Some(\"raw\") why");
        assert_eq!(check("local", "ova", "extract", Some(""), "pkg").unwrap(), "local ova extract None pkg");
        assert_eq!(check("nfs", "iso", "refuse", Some("qcow2"), "no").unwrap(), "nfs iso refuse None no", "a stray target is dropped");
        for (args, want) in [
            (("ceph", "vdi", "native", None, "r"), "Unknown backend kind 'ceph'"),
            (("local", "exe", "native", None, "r"), "Unknown format 'exe'"),
            (("local", "vdi", "shrug", None, "r"), "Unknown action 'shrug'"),
            (("local", "vdi", "convert", None, "r"), "Choose the format"),
            (("local", "vdi", "convert", Some("vmdk"), "r"), "cannot convert to 'vmdk'"),
            (("local", "raw", "convert", Some("raw"), "r"), "to itself is 'native'"),
            (("local", "iso", "convert", Some("qcow2"), "r"), "iso is not a disk Hangar can convert"),
            (("local", "vdi", "extract", None, "r"), "Only packages"),
            (("local", "vdi", "native", None, "  "), "Give the reason"),
        ] {
            let (k, f, a, t, r) = args;
            let e = check(k, f, a, t, r).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(check("local", "vdi", "native", None, &"x".repeat(501)).unwrap_err().contains("under 500"));
    }
}
