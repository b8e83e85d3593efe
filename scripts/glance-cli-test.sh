#!/usr/bin/env bash
# Drives Hangar's Glance-compatible API with the real clients, unmodified and without Keystone:
# python-glanceclient (`glance`, with OS_IMAGE_URL + OS_AUTH_TOKEN) and openstackclient
# (`openstack image …` with --os-auth-type admin_token and --os-endpoint …/image/v2), both from
# scripts/py-requirements.txt in .venv. It starts target/debug/hangar on 127.0.0.1 (a free
# port) with a fresh data dir, makes users, projects and API tokens with the `hangar` CLI, and
# runs a scripted session with each client: create with and without data, a qemu-img-made
# qcow2 and VDI, list with filters and paging, show, update properties and tags, download and
# verify, stage + import, web-download (from a python3 http.server on 127.0.0.1, the one host
# the server is allowed to fetch from), deactivate/reactivate, sharing (member-*), delete, and
# the error paths (415 mismatch/unsafe image, 409 wrong status, 404, 403 for a reader), and
# packages declared as Glance does (an OVA as container ova + disk vmdk with both clients, a
# UEC tarball as container uec + disk ami with glanceclient; made here with qemu-img, tar and
# python3), and, with scripts/test.sh's Ceph, an RBD store as Nova uses it (direct_url, a clone
# that blocks the delete). Every command's exit status and output are checked. The servers are stopped and the data removed
# on exit.
#
# usage: scripts/glance-cli-test.sh      (after `cargo build -p server --bin hangar`;
#                                         HANGAR_BIN=/path/to/hangar to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
bin=${HANGAR_BIN:-$target_dir/debug/hangar}
venv=$root/.venv
start=$SECONDS

die() { printf '\nFAILED: %b\n' "$*" >&2; exit 1; }
[[ -x $bin ]] || die "no server binary at $bin; run: cargo build -p server --bin hangar"
command -v qemu-img >/dev/null || die "qemu-img is required (apt-get install qemu-utils)"
if [[ ! -x $venv/bin/glance || ! -x $venv/bin/openstack ]]; then
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/py-requirements.txt
fi

work=$(mktemp -d)
server_pid=
web_pid=
cleanup() {
  local pid
  for pid in $server_pid $web_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# --- the server ------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
# The web-download origin started below: allowed by host and port (a bare host allows 80/443 only).
web_port=$(free_port)
url=http://127.0.0.1:$port/image
data=$work/data
# web-download may fetch from 127.0.0.1 only (the origin started before the web-download steps).
# With the Ceph that scripts/test.sh starts (CEPH_CONF, CEPH_RBD_POOL exported), an RBD backend
# beside the local one (the default), and direct URLs shown, as a Nova deployment configures Glance.
config=()
if [[ -n ${CEPH_CONF:-} && -n ${CEPH_RBD_POOL:-} ]]; then
  cat >"$work/hangar.toml" <<EOF
show_image_direct_url = true

[[storage]]
name = "local"
kind = "local"

[[storage]]
name = "rbd"
kind = "rbd"
pool = "$CEPH_RBD_POOL"
conf = "$CEPH_CONF"
EOF
  config=(--config "$work/hangar.toml")
fi
HANGAR_BOOTSTRAP_ADMIN=admin HANGAR_BOOTSTRAP_PASSWORD=glance-cli-admin-pw HANGAR_LOG=${HANGAR_LOG:-warn} \
  HANGAR_WEB_DOWNLOAD_ALLOWED_HOSTS="127.0.0.1:$web_port" "$bin" "${config[@]}" --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || die "the server exited:\n$(cat "$work/server.log")"
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || die "the server did not answer within 60 s"

# --- accounts, with the hangar CLI (it may run beside the server) ----------------------------
hangar() { timeout 60 "$bin" --data-dir "$data" "$@"; }
export HANGAR_PASSWORD=glance-cli-user-pw
for u in ana rita oscar; do hangar user create "$u" >/dev/null; done
web=$(hangar project create web | sed -n 's/.*(\(.*\))$/\1/p')
ops=$(hangar project create ops | sed -n 's/.*(\(.*\))$/\1/p')
[[ -n $web && -n $ops ]] || die "project ids not printed"
hangar role grant ana web member >/dev/null
hangar role grant rita web reader >/dev/null
hangar role grant oscar ops member >/dev/null
declare -A tok
tok[ana]=$(hangar token create ana web cli)
tok[rita]=$(hangar token create rita web cli)
tok[oscar]=$(hangar token create oscar ops cli)
[[ ${tok[ana]} == hgr_* ]] || die "no token printed"

# --- helpers ---------------------------------------------------------------------------------
# glanceclient caches schemas under ~/.glanceclient: a fresh HOME, and no stray OS_* settings.
export HOME=$work/home
mkdir -p "$HOME"
for v in $(compgen -e | grep '^OS_' || true); do unset "$v"; done
# G USER args… / O USER args…: the two clients, acting with USER's token.
G() { local u=$1; shift; OS_IMAGE_URL=$url OS_AUTH_TOKEN=${tok[$u]} timeout 120 "$venv/bin/glance" "$@"; }
O() { local u=$1; shift; timeout 120 "$venv/bin/openstack" --os-auth-type admin_token --os-endpoint "$url/v2" --os-token "${tok[$u]}" "$@"; }
steps=0
# run CMD…: runs with stdin closed (glanceclient would read a non-TTY stdin as image data),
# leaving the output in $out and the status in $rc.
run() {
  steps=$((steps + 1))
  printf '+ %s\n' "$*"
  set +e
  out=$("$@" 2>&1 0<&-)
  rc=$?
  set -e
}
ok() { run "$@"; [[ $rc -eq 0 ]] || die "expected success (status $rc): $*\n$out"; }
# fails TEXT CMD…: the command must fail and say TEXT.
fails() {
  local want=$1; shift
  run "$@"
  [[ $rc -ne 0 ]] || die "expected a failure: $*\n$out"
  grep -qF -- "$want" <<<"$out" || die "expected '$want' in the output of: $*\n$out"
}
has() { grep -qF -- "$1" <<<"$out" || die "expected '$1' in the output:\n$out"; }
lacks() { ! grep -qF -- "$1" <<<"$out" || die "did not expect '$1' in the output:\n$out"; }
# field NAME: a value from glanceclient's Property/Value table in $out.
field() { awk -F'|' -v k="$1" '{ key = $2; gsub(/^ +| +$/, "", key); if (key == k) { v = $3; gsub(/^ +| +$/, "", v); print v; exit } }' <<<"$out"; }
expect() { [[ $2 == "$3" ]] || die "$1: expected '$3', got '$2'"; }
# names: the Name column of a glanceclient list, in order, space-separated.
names() { awk -F'|' 'NR > 3 && NF > 3 { n = $3; gsub(/^ +| +$/, "", n); printf "%s ", n }' <<<"$out" | sed 's/ $//'; }
wait_status() { # USER ID STATUS
  local i
  for i in $(seq 1 120); do
    run G "$1" image-show "$2"
    [[ $rc -eq 0 && $(field status) == "$3" ]] && return 0
    sleep 0.5
  done
  die "image $2 did not become $3:\n$out"
}

# --- images made by qemu-img (the oracle; always with -f) ------------------------------------
img=$work/img
mkdir -p "$img"
qemu-img create -q -f qcow2 "$img/disk.qcow2" 16M
qemu-img create -q -f vdi "$img/disk.vdi" 8M
qemu-img create -q -f qcow2 "$img/base.qcow2" 1M
qemu-img create -q -f qcow2 -F qcow2 -b "$img/base.qcow2" "$img/child.qcow2" 1M
qcow2_md5=$(md5sum "$img/disk.qcow2" | cut -d' ' -f1)
qcow2_sha512=$(sha512sum "$img/disk.qcow2" | cut -d' ' -f1)

echo "=== glance (python-glanceclient) against $url"
ok G ana image-list
has "| ID"
ok G ana image-create --name cirros --disk-format qcow2 --container-format bare --file "$img/disk.qcow2" --property os_distro=cirros --tags a b
q=$(field id)
expect "status" "$(field status)" active
expect "checksum" "$(field checksum)" "$qcow2_md5"
expect "size" "$(field size)" "$(stat -c %s "$img/disk.qcow2")"
expect "virtual_size" "$(field virtual_size)" 16777216
has "$(cut -c1-60 <<<"$qcow2_sha512")"
ok G ana image-create --name vbox --disk-format vdi --container-format bare
v=$(field id)
expect "status without data" "$(field status)" queued
ok G ana image-upload --file "$img/disk.vdi" "$v"
ok G ana image-show "$v"
expect "VDI status" "$(field status)" active
expect "VDI stored as" "$(field disk_format)" qcow2

# Listing: sort, paging (page size 1 follows `next`), limit, filters.
ok G ana image-list --sort name:asc --page-size 1
expect "paged list" "$(names)" "cirros vbox"
ok G ana image-list --sort-key name --sort-dir desc
expect "classic sort" "$(names)" "vbox cirros"
ok G ana image-list --sort name:asc --limit 1
expect "limit" "$(names)" "cirros"
ok G ana image-list --property-filter os_distro=cirros
expect "property filter" "$(names)" "cirros"
ok G ana image-list --tag a --tag b
expect "tag filter" "$(names)" "cirros"
ok G ana image-list --property-filter disk_format=qcow2 --visibility shared --sort name:asc
expect "format + visibility" "$(names)" "cirros vbox"
ok G ana image-list --property-filter os_distro=none
expect "no match" "$(names)" ""

# Show and update.
ok G ana image-show "$q"
expect "name" "$(field name)" cirros
ok G ana image-update --name cirros-2 --property hw_disk_bus=virtio --min-disk 1 "$q"
expect "renamed" "$(field name)" cirros-2
expect "property" "$(field hw_disk_bus)" virtio
expect "min_disk" "$(field min_disk)" 1
ok G ana image-update --remove-property hw_disk_bus "$q"
lacks hw_disk_bus
ok G ana image-tag-update "$q" t3
ok G ana image-tag-delete "$q" a
ok G ana image-show "$q"
expect "tags" "$(field tags)" '["b", "t3"]'

# Downloads, checked by the client (sha512 multihash) and here.
ok G ana image-download --file "$work/q.out" "$q"
cmp -s "$work/q.out" "$img/disk.qcow2" || die "the downloaded qcow2 differs from the upload"
ok G ana image-download --file "$work/v.out" "$v"
ok qemu-img compare -f vdi -F qcow2 "$img/disk.vdi" "$work/v.out"
has "Images are identical"
ok qemu-img check -f qcow2 "$work/v.out"

# Stage + import (glance-direct), in two steps and in one.
ok G ana image-create --name staged --disk-format qcow2 --container-format bare
s=$(field id)
ok G ana image-stage --file "$img/disk.qcow2" "$s"
ok G ana image-show "$s"
expect "staged status" "$(field status)" uploading
ok G ana image-import --import-method glance-direct "$s"
wait_status ana "$s" active
expect "imported checksum" "$(field checksum)" "$qcow2_md5"
ok G ana image-create-via-import --name via-import --disk-format qcow2 --container-format bare --file "$img/disk.qcow2"
via=$(field id)
wait_status ana "$via" active
ok G ana image-tasks "$via"
has success
ok G ana import-info
has copy-image
ok G ana stores-info
has local
ok G ana usage
has image_count_total

# web-download from an origin on 127.0.0.1 (allowed); the same origin named localhost is not.
python3 -m http.server --bind 127.0.0.1 --directory "$img" "$web_port" >"$work/web.log" 2>&1 &
web_pid=$!
for _ in $(seq 1 60); do
  curl -fsS -o /dev/null "http://127.0.0.1:$web_port/disk.qcow2" 2>/dev/null && break
  sleep 0.25
done
curl -fsS -o /dev/null "http://127.0.0.1:$web_port/disk.qcow2" || die "the web-download origin did not start:\n$(cat "$work/web.log")"
ok G ana import-info
has web-download
ok G ana image-create-via-import --name via-web --disk-format qcow2 --container-format bare \
  --import-method web-download --uri "http://127.0.0.1:$web_port/disk.qcow2"
wd=$(field id)
[[ -n $wd ]] || die "no id printed:\n$out"
wait_status ana "$wd" active
expect "web-download checksum" "$(field checksum)" "$qcow2_md5"
ok G ana image-create --name web-refused --disk-format qcow2 --container-format bare
wr=$(field id)
fails "does not pass filtering" G ana image-import --import-method web-download --uri "http://localhost:$web_port/disk.qcow2" "$wr"
ok G ana image-show "$wr"
expect "refused web-download leaves" "$(field status)" queued

# Deactivate / reactivate.
ok G ana image-deactivate "$q"
ok G ana image-show "$q"
expect "deactivated" "$(field status)" deactivated
fails "deactivated" G ana image-download --file "$work/x.out" "$q"
ok G ana image-reactivate "$q"
ok G ana image-show "$q"
expect "reactivated" "$(field status)" active

# Sharing with another project: member-create, the member accepts, then sees and downloads it.
ok G ana member-create "$q" "$ops"
has pending
ok G oscar image-list
lacks cirros-2
ok G oscar image-list --member-status pending
has cirros-2
fails "Only the member project" G ana member-update "$q" "$ops" accepted
ok G oscar member-update "$q" "$ops" accepted
has accepted
ok G oscar image-list
has cirros-2
ok G oscar image-download --file "$work/o.out" "$q"
cmp -s "$work/o.out" "$img/disk.qcow2" || die "the member's download differs"
ok G ana member-list --image-id "$q"
has "$ops"
fails "404 Not Found" G oscar image-show "$v"
ok G ana member-delete "$q" "$ops"
fails "404 Not Found" G oscar image-show "$q"

# Error paths.
fails "was refused" G ana image-create --name liar --disk-format vdi --container-format bare --file "$img/disk.qcow2"
has "declared as vdi but it is a qcow2"
fails "was refused" G ana image-create --name child --disk-format qcow2 --container-format bare --file "$img/child.qcow2"
has "backing file"
fails "transition from active to saving is not allowed" G ana image-upload --file "$img/disk.qcow2" "$q"
fails "404 Not Found" G ana image-show 00000000-0000-0000-0000-000000000000
fixed=5f1c7d2e-0a4b-4c3d-8e9f-a0b1c2d3e4f5
ok G ana image-create --id "$fixed" --name fixed-id
expect "chosen id" "$(field id)" "$fixed"
fails "409 Conflict" G ana image-create --id "$fixed" --name again
ok G ana image-delete "$fixed"
# A deleted id is never taken again (its tombstone stays; OSSN-0075).
fails "409 Conflict" G ana image-create --id "$fixed" --name reborn
fails "Readers cannot upload" G rita image-create --name reader --disk-format qcow2 --container-format bare
fails "Readers cannot change" G rita image-update --name by-reader "$q"
ok G rita image-list
has cirros-2
fails "can only be applied to an image in status 'queued'" G ana image-import --import-method web-download --uri "http://127.0.0.1:$web_port/disk.qcow2" "$s"
ok G ana image-update --protected True "$s"
fails "not permitted to delete" G ana image-delete "$s"
ok G ana image-show "$s"
expect "protected image kept" "$(field protected)" True
ok G ana image-update --protected False "$s"

# Delete.
ok G ana image-delete "$s" "$via" "$wd" "$wr"
fails "404 Not Found" G ana image-show "$s"

echo "=== openstack image (openstackclient, admin_token) against $url/v2"
ok O ana image list -f value -c Name
has cirros-2
ok O ana image create --disk-format qcow2 --container-format bare --file "$img/disk.qcow2" --property k=v --tag t --private --min-disk 1 --min-ram 64 osc-q -f value -c status
expect "osc create" "$out" active
ok O ana image show osc-q -f value -c checksum
expect "osc checksum" "$out" "$qcow2_md5"
ok O ana image create --disk-format vdi --container-format bare --file "$img/disk.vdi" osc-vdi -f value -c disk_format
expect "osc VDI stored as" "$out" qcow2
ok O ana image list --private -f value -c Name
expect "osc private list" "$out" osc-q
ok O ana image list --tag t -f value -c Name
expect "osc tag list" "$out" osc-q
ok O ana image list --status active --sort name:asc -f value -c Name
expect "osc sorted list" "$(tr '\n' ' ' <<<"$out")" "cirros-2 osc-q osc-vdi vbox "
ok O ana image set --property k2=v2 --tag t2 --name osc-q2 --min-disk 2 osc-q
ok O ana image unset --property k --tag t osc-q2
ok O ana image show osc-q2 -f json -c tags -c properties -c min_disk
has '"k2": "v2"'
lacks '"k": "v"'
has '"t2"'
lacks '"t"'
has '"min_disk": 2'
ok O ana image save --file "$work/osc.out" osc-q2
cmp -s "$work/osc.out" "$img/disk.qcow2" || die "openstack image save differs from the upload"
ok O ana image create --import --disk-format qcow2 --container-format bare --file "$img/disk.qcow2" osc-import -f value -c id
oi=$out
wait_status ana "$oi" active
ok O ana image set --deactivate osc-q2
ok O ana image show osc-q2 -f value -c status
expect "osc deactivated" "$out" deactivated
ok O ana image set --activate osc-q2
ok O ana image show osc-q2 -f value -c status
expect "osc activated" "$out" active
ok O ana image import info
has glance-direct
ok O ana image stores list
has local
fails "No Image found" O ana image show 00000000-0000-0000-0000-000000000000
fails "refused" O ana image create --disk-format vdi --container-format bare --file "$img/disk.qcow2" osc-liar
fails "Forbidden" O rita image delete osc-q2
fails "Forbidden" O rita image set --name by-reader osc-q2
ok O ana image set --protected osc-q2
fails "protected" O ana image delete osc-q2
ok O ana image set --unprotected osc-q2
ok O ana image delete osc-q2 osc-vdi "$oi"
ok O ana image list -f value -c Name
lacks osc-q2

echo "=== packages, declared as Glance does: the container format, with the disk format of the disk inside"
# An OVA: an OVF descriptor and a streamOptimized VMDK made by qemu-img, then a raw second disk.
pkg=$work/pkg
mkdir -p "$pkg"
head -c $((4 << 20)) /dev/urandom >"$pkg/root.raw"
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$pkg/root.raw" "$pkg/disk1.vmdk"
head -c $((2 << 20)) /dev/zero | tr '\0' 'Z' >"$pkg/disk2.img"
so=http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized
cat >"$pkg/app.ovf" <<OVF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="f1" ovf:href="disk1.vmdk"/><File ovf:id="f2" ovf:href="disk2.img"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="root" ovf:fileRef="f1" ovf:capacity="4" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="$so"/>
    <Disk ovf:diskId="data" ovf:fileRef="f2" ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://en.wikipedia.org/wiki/Byte"/>
  </DiskSection>
  <VirtualSystem ovf:id="app"><Info>vm</Info><Name>CLI appliance</Name></VirtualSystem>
</Envelope>
OVF
tar --format=ustar -cf "$img/app.ova" -C "$pkg" app.ovf disk1.vmdk disk2.img
ok O ana image create --container-format ova --disk-format vmdk --file "$img/app.ova" osc-ova -f value -c status
expect "openstack image create of an OVA" "$out" active
ok O ana image show osc-ova -f json -c disk_format -c container_format -c properties
has '"disk_format": "qcow2"'
has '"container_format": "bare"'
has '"ovf_name": "CLI appliance"'
ok O ana image save --file "$work/ova.out" osc-ova
ok qemu-img compare -f raw -F qcow2 "$pkg/root.raw" "$work/ova.out"
ok O ana image list -f value -c Name
has "osc-ova (disk 2)"
ok G ana image-create --name g-ova --container-format ova --disk-format vmdk --file "$img/app.ova"
expect "glance image-create of an OVA" "$(field status)" active
fails "declare disk_format vmdk with container_format ova" O ana image create --container-format ova --disk-format raw --file "$img/app.ova" osc-ova-raw
fails "declare container_format ova" O ana image create --container-format bare --disk-format vmdk --file "$img/app.ova" osc-ova-bare
# A UEC tarball: a machine image (an ext4 superblock's magic), a bzImage kernel, a newc initrd.
uec=$work/uec
mkdir -p "$uec"
python3 - "$uec" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
img = bytearray(4 << 20); img[1080:1082] = b"\x53\xef"; img[2 << 20:(2 << 20) + 5000] = b"\x11" * 5000
kernel = bytearray(8192); kernel[0x1FE:0x200] = b"\x55\xaa"; kernel[0x202:0x206] = b"HdrS"
(d / "app.img").write_bytes(img)
(d / "app-vmlinuz-virtual").write_bytes(kernel)
(d / "app-initrd-virtual").write_bytes(b"070701" + b"0" * 200)
PY
tar --format=ustar -czf "$img/app.tar.gz" -C "$uec" app.img app-vmlinuz-virtual app-initrd-virtual
# openstackclient offers only Glance's own container formats (its --container-format choices),
# so a UEC tarball, Hangar's `uec`, goes through glanceclient, which takes the server's schema.
ok G ana image-create --name g-uec --container-format uec --disk-format ami --file "$img/app.tar.gz"
expect "glance image-create of a UEC tarball" "$(field status)" active
expect "the AMI's disk format" "$(field disk_format)" ami
kernel_id=$(field kernel_id)
ramdisk_id=$(field ramdisk_id)
ok G ana image-show "$kernel_id"
expect "the kernel" "$(field disk_format)/$(field status)" aki/active
ok G ana image-show "$ramdisk_id"
expect "the ramdisk" "$(field disk_format)/$(field status)" ari/active
fails "cannot be the disk inside it" G ana image-create --name g-uec-qcow2 --container-format uec --disk-format qcow2 --file "$img/app.tar.gz"

# --- Ceph RBD: what Nova does with an image in an RBD store ----------------------------------
# Upload to the rbd store (glanceclient's --store), converted to raw; direct_url names the RBD
# snapshot; a clone of it (a VM's disk) makes the delete fail with 409 until it is removed.
if [[ ${#config[@]} -gt 0 ]]; then
  echo "=== RBD store (pool $CEPH_RBD_POOL)"
  R() { timeout 60 rbd -c "$CEPH_CONF" "$@"; }
  ok G ana stores-info
  has rbd
  ok G ana image-create --name g-rbd --disk-format qcow2 --container-format bare --store rbd --file "$img/disk.qcow2"
  r=$(field id)
  wait_status ana "$r" active
  expect "stored on" "$(field stores)" rbd
  expect "converted for RBD" "$(field disk_format)" raw
  ok G ana image-show --max-column-width 200 "$r"
  direct=$(field direct_url)
  [[ $direct == rbd://*/"$CEPH_RBD_POOL"/*/snap ]] || die "direct_url is not an RBD snapshot: '$direct'"
  rbd_image=${direct%/snap}
  rbd_image=${rbd_image##*/}
  ok O ana image show g-rbd -f json -c properties
  has "$direct"
  ok R info "$CEPH_RBD_POOL/$rbd_image@snap"
  has "protected: True"
  ok R clone "$CEPH_RBD_POOL/$rbd_image@snap" "$CEPH_RBD_POOL/vm-$rbd_image"
  fails "in use" O ana image delete g-rbd
  ok G ana image-show "$r"
  expect "kept while cloned" "$(field status)" active
  ok R rm --no-progress "$CEPH_RBD_POOL/vm-$rbd_image"
  ok O ana image delete g-rbd
  ok R ls "$CEPH_RBD_POOL"
  lacks "$rbd_image"
else
  echo "(no CEPH_CONF / CEPH_RBD_POOL: the RBD steps run under scripts/test.sh, which starts Ceph)"
fi

printf '\n=== glance-cli-test: %d commands passed in %ss\n' "$steps" "$((SECONDS - start))"
