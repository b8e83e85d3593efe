#!/usr/bin/env bash
# ceph-up.sh STATE_DIR S3_PORT
#
# Throw-away single-node Ceph for CI: 1 mon (+ optional mgr) + 1 OSD + radosgw (S3),
# everything bound to 127.0.0.1, no systemd / cephadm / containers, auth = none.
# Needs Debian packages: ceph-mon ceph-osd radosgw ceph-common uuid-runtime (+ ceph-mgr if
# CEPH_WITH_MGR=1); scripts/setup.sh test installs them (scripts/apt-packages.txt).
# Hangar's copy: crates/storage/tests/ceph.rs and scripts/test.sh start their clusters with it.
#
# stdout: only KEY=VALUE lines (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...),
#         usable as `set -a; . <(ceph-up.sh d 8480); set +a` or `>> "$GITHUB_ENV"`.
# stderr: progress + errors. Exit 0 = S3 is up and a signed ListBuckets succeeded.
#
# Idempotent: if STATE_DIR already holds a healthy cluster on the same port it is reused
# (same keys printed again); otherwise any leftover daemons of STATE_DIR are stopped, the
# dir is wiped (only if it was created by this script, or is empty) and rebuilt.
# On failure the daemons it started are stopped again (CEPH_KEEP_ON_FAILURE=1 keeps them).
#
# Tunables (env):
#   CEPH_MON_PORT        mon msgr2 port                      (default S3_PORT+1)
#   CEPH_MS_PORT_MIN/MAX port range for osd/mgr              (default S3_PORT+2 .. S3_PORT+41)
#   CEPH_OBJECTSTORE     bluestore | memstore  (default bluestore on a sparse file STATE_DIR/osd/0/block;
#                        memstore keeps all data in OSD RAM: faster start, RSS grows with stored data)
#   CEPH_STORE_MB        bluestore sparse file size / memstore capacity in MiB (default 10240).
#                        Keep it below the real free disk (bluestore) or free RAM (memstore). When the
#                        OSD reaches 95% of this, Ceph marks it full and S3 writes HANG (no error).
#   CEPH_WITH_MGR        1 = also start ceph-mgr (+300 MB RSS; only needed for `ceph df`/pg stats)
#   CEPH_RBD_POOL        if set, create this pool and `rbd pool init` it (also when reusing a cluster);
#                        printed back as CEPH_RBD_POOL
#   CEPH_S3_UID          S3 user id (default ci); CEPH_S3_ACCESS_KEY / CEPH_S3_SECRET_KEY (default random)
#   CEPH_UP_TIMEOUT      seconds to wait for each readiness step (default 120)
set -Eeuo pipefail

usage() { echo "usage: $0 STATE_DIR S3_PORT" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
PORT=$2
[[ $PORT =~ ^[0-9]+$ ]] && (( PORT >= 1024 && PORT <= 65000 )) || { echo "ceph-up: ERROR: bad S3 port '$PORT'" >&2; exit 2; }
S=$(realpath -m -- "$1")
[[ $S != / && $S != "$HOME" ]] || { echo "ceph-up: ERROR: refusing state dir '$S'" >&2; exit 2; }

MON_PORT=${CEPH_MON_PORT:-$((PORT + 1))}
MS_MIN=${CEPH_MS_PORT_MIN:-$((PORT + 2))}
MS_MAX=${CEPH_MS_PORT_MAX:-$((PORT + 41))}
STORE=${CEPH_OBJECTSTORE:-bluestore}
STORE_MB=${CEPH_STORE_MB:-10240}
WITH_MGR=${CEPH_WITH_MGR:-0}
RBD_POOL=${CEPH_RBD_POOL:-}
S3_UID=${CEPH_S3_UID:-ci}
TIMEOUT=${CEPH_UP_TIMEOUT:-120}
CONF=$S/ceph.conf
MARK=$S/.ceph-up-state
ENVF=$S/s3.env
ENDPOINT=http://127.0.0.1:$PORT
DAEMONS=(client.rgw.a mgr.a osd.0 mon.a)          # stop order
STARTED=0

log() { printf 'ceph-up: [+%ss] %s\n' "$SECONDS" "$*" >&2; }

# ours PID: alive, not a zombie (a zombie's cmdline is empty), and its command line references our
# ceph.conf -- protects against recycled pids and stale pid files
ours() { [[ $1 =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null </proc/"$1"/cmdline | grep -qF -- "$CONF"; }
# stop_all [SIG]: SIGTERM (default; SIGKILL after 10 s) or SIGKILL right away (state gets wiped anyway)
stop_all() {
  local n pidf pid i sig=${1:-TERM}
  for n in "${DAEMONS[@]}"; do
    pidf=$S/run/$n.pid
    [[ -f $pidf ]] || continue
    pid=$(<"$pidf")
    if ours "$pid"; then
      kill -"$sig" "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do ours "$pid" || break; sleep 0.2; done
      ours "$pid" && { log "$n ($pid) still running after 10 s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$pidf"
  done
}

die() {
  log "ERROR: $*"
  local f
  for f in "$S"/log/mon.a.log "$S"/log/osd.0.log "$S"/log/client.rgw.a.log; do
    [[ -s $f ]] && { log "---- last lines of $f ----"; tail -n 15 "$f" >&2; }
  done
  if (( STARTED )) && [[ ${CEPH_KEEP_ON_FAILURE:-0} != 1 ]]; then
    log "stopping daemons started so far (CEPH_KEEP_ON_FAILURE=1 keeps them)"; stop_all
  fi
  exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

C() { timeout 60 ceph -c "$CONF" "$@"; }                         # ceph CLI with a hard timeout
wait_for() {                                                     # wait_for "what" cmd...
  local what=$1; shift; local end=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < end )) || die "timeout after ${TIMEOUT}s waiting for $what"
    sleep 0.3
  done
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_ok() { local p; p=$(cat "$S/run/$1.pid" 2>/dev/null) && ours "$p"; }
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3_signed_ok() {   # signed ListAllMyBuckets must return our user as owner
  # curl < 8.x does not add x-amz-content-sha256 itself; RGW then answers SignatureDoesNotMatch
  curl -sf --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$1:$2" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" "$ENDPOINT/" | grep -q "<ID>$S3_UID</ID>"
}
emit_env() { cat "$ENVF"; }
# The RBD pool (idempotent: an existing pool is kept); its name joins the printed variables.
rbd_pool() {
  [[ -n $RBD_POOL ]] || return 0
  log "rbd: pool $RBD_POOL"
  timeout 60 ceph -c "$CONF" osd pool create "$RBD_POOL" 8 8 >/dev/null 2>&1 || die "ceph osd pool create $RBD_POOL failed"
  timeout 60 rbd -c "$CONF" pool init "$RBD_POOL" || die "rbd pool init $RBD_POOL failed"
  grep -qx "CEPH_RBD_POOL=$RBD_POOL" "$ENVF" || echo "CEPH_RBD_POOL=$RBD_POOL" >>"$ENVF"
}

# ---------------------------------------------------------------- preflight
for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl timeout od realpath; do
  command -v "$b" >/dev/null || die "'$b' not found; apt-get install -y ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl (or scripts/setup.sh test)"
done
[[ $WITH_MGR != 1 ]] || command -v ceph-mgr >/dev/null || die "CEPH_WITH_MGR=1 but ceph-mgr is not installed"
[[ $STORE == memstore || $STORE == bluestore ]] || die "CEPH_OBJECTSTORE must be memstore or bluestore"

# ---------------------------------------------------------------- reuse if healthy
if [[ -f $MARK && -f $ENVF ]] && grep -qx "port=$PORT" "$MARK" && pid_ok mon.a && pid_ok osd.0 && pid_ok client.rgw.a; then
  AK=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$ENVF"); SK=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$ENVF")
  if s3_signed_ok "$AK" "$SK"; then log "cluster in $S already up, reusing"; rbd_pool; emit_env; exit 0; fi
  log "existing cluster in $S is not healthy, rebuilding"
fi

# ---------------------------------------------------------------- wipe leftovers
if [[ -e $S ]]; then
  [[ -d $S ]] || die "$S exists and is not a directory"
  if [[ -f $MARK ]]; then
    stop_all KILL    # a broken cluster (e.g. dead OSD) leaves radosgw stuck in shutdown; data is wiped anyway
    find "$S" -mindepth 1 -delete
  elif [[ -n $(ls -A "$S") ]]; then
    die "$S is non-empty and was not created by ceph-up.sh; refusing to wipe it"
  fi
fi
for p in "$PORT" "$MON_PORT"; do port_busy "$p" && die "port 127.0.0.1:$p already in use"; done

T0=$SECONDS
mkdir -p "$S"/{run,log,mon/a,osd/0,mgr/a,rgw}
printf 'port=%s\n' "$PORT" >"$MARK"
FSID=$(uuidgen)
STORE_BYTES=$((STORE_MB * 1024 * 1024))

if [[ $STORE == memstore ]]; then
  STORE_CONF="osd objectstore = memstore
memstore device bytes = $STORE_BYTES"
else
  STORE_CONF="osd objectstore = bluestore
bluestore block create = true
bluestore block size = $STORE_BYTES
bluestore fsck on mkfs = false
osd memory target = 1073741824"
fi

cat >"$CONF" <<EOF
# generated by ceph-up.sh
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind ipv6 = false
ms bind port min = $MS_MIN
ms bind port max = $MS_MAX
auth cluster required = none
auth service required = none
auth client required = none
# radosgw defaults to ms_mon_client_mode=secure, which cannot be negotiated with auth=none
ms mon client mode = crc
client mount timeout = 30
run dir = $S/run
log file = $S/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
# CI disks are often fairly full; the mon shuts itself down below 'crit' (default 5%)
mon data avail warn = 2
mon data avail crit = 1
# the mon batches map changes for 1 s by default; RGW's pool creation at startup needs ~8 map
# epochs, so a short propose interval cuts several seconds off bring-up
paxos propose interval = ${CEPH_PAXOS_INTERVAL:-0.1}
[mon]
mon data = $S/mon/\$id
admin socket = $S/run/\$name.asok
pid file = $S/run/\$name.pid
[mgr]
mgr data = $S/mgr/\$id
admin socket = $S/run/\$name.asok
pid file = $S/run/\$name.pid
[osd]
osd data = $S/osd/\$id
admin socket = $S/run/\$name.asok
pid file = $S/run/\$name.pid
$STORE_CONF
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $S/rgw
# deleted/overwritten object data is normally reclaimed by RGW GC after 2 h; free it within ~10 s
rgw gc obj min wait = 5
rgw gc processor period = 5
admin socket = $S/run/\$name.asok
pid file = $S/run/\$name.pid
EOF

# ---------------------------------------------------------------- mon
log "mon: mkfs + start (127.0.0.1:$MON_PORT)"
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$S/monmap" >/dev/null
ceph-mon -c "$CONF" -i a --mkfs --monmap "$S/monmap" 2>>"$S/log/setup.log"
STARTED=1
ceph-mon -c "$CONF" -i a 2>>"$S/log/setup.log"
wait_for "mon quorum" C quorum_status

# ---------------------------------------------------------------- mgr (optional)
if [[ $WITH_MGR == 1 ]]; then
  log "mgr: start"
  ceph-mgr -c "$CONF" -i a 2>>"$S/log/setup.log"
fi

# ---------------------------------------------------------------- osd
log "osd: mkfs ($STORE, ${STORE_MB} MiB) + start"
OSD_UUID=$(uuidgen)
OSD_ID=$(C osd new "$OSD_UUID")
[[ $OSD_ID == 0 ]] || die "unexpected osd id '$OSD_ID'"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$S/log/setup.log" 2>&1 ||
  die "ceph-osd --mkfs failed (bluestore needs O_DIRECT+libaio on $S's filesystem; try CEPH_OBJECTSTORE=memstore)"
ceph-osd -c "$CONF" -i 0 >>"$S/log/setup.log" 2>&1
osd_up() { C osd stat -f json | grep -q '"num_up_osds":1'; }
wait_for "osd.0 up" osd_up

if [[ $WITH_MGR == 1 ]]; then
  mgr_up() { C mgr stat | grep -q '"available": true'; }
  wait_for "mgr available" mgr_up
fi

# ---------------------------------------------------------------- rgw
log "rgw: start (beast on $ENDPOINT)"
radosgw -c "$CONF" -n client.rgw.a 2>>"$S/log/setup.log"
rgw_up() { [[ $(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "$ENDPOINT/") == 200 ]]; }
wait_for "radosgw HTTP 200 on $ENDPOINT" rgw_up

# ---------------------------------------------------------------- S3 user
AK=${CEPH_S3_ACCESS_KEY:-$(rand_hex 10 | tr a-f A-F)}
SK=${CEPH_S3_SECRET_KEY:-$(rand_hex 20)}
timeout 60 radosgw-admin -c "$CONF" user create --uid="$S3_UID" --display-name="CI user" \
  --access-key="$AK" --secret-key="$SK" >"$S/log/user-create.json" 2>>"$S/log/setup.log" ||
  die "radosgw-admin user create failed"
s3ok() { s3_signed_ok "$AK" "$SK"; }
wait_for "signed S3 ListBuckets" s3ok

cat >"$ENVF" <<EOF
S3_ENDPOINT=$ENDPOINT
AWS_ENDPOINT_URL=$ENDPOINT
AWS_ACCESS_KEY_ID=$AK
AWS_SECRET_ACCESS_KEY=$SK
AWS_DEFAULT_REGION=us-east-1
AWS_REGION=us-east-1
CEPH_CONF=$CONF
EOF
# ---------------------------------------------------------------- rbd (optional)
rbd_pool
log "S3 ready in $((SECONDS - T0))s (state: $S, mon 127.0.0.1:$MON_PORT, osd/mgr ports $MS_MIN-$MS_MAX)"
trap - ERR
emit_env
