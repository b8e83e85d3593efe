//! One module per format: public header structs (for the converter and tools) and the checks.
//!
//! Every parser works on bytes obtained through the crate's bounded reads; none does I/O.

pub mod gzip;
pub mod iso;
pub mod kernel;
pub mod luks;
pub mod ova;
pub mod qcow2;
pub mod qed;
pub mod raw;
pub mod tar;
pub mod uec;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
