//! The real single-node Ceph (RADOS Gateway, S3) the tests store into (`crates/testceph`):
//! scripts/test.sh's cluster, or else this test run's own on port 17680.

use std::path::Path;
use std::sync::OnceLock;

pub use testceph::Cluster;

pub fn cluster() -> Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| testceph::shared(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("ceph-server-tests"), 17680)).clone()
}
