-- Images' disk and container formats are now read as enums (crates/domain: DiskFormat,
-- ContainerFormat), so a stored value that is not one is an error, not a silent default.
-- Before packages were declared by their container format (imageops::declared), an OVA or UEC
-- image could carry the package's name as its disk format, and a package kept whole by a
-- `native` matrix cell still did. Glance's convention, which the import follows from now on:
-- the package is the container format, the disk format names the disk inside (unknown here).
UPDATE images SET container_format = disk_format, disk_format = NULL
WHERE disk_format IN ('ova', 'uec');
