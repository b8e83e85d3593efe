//! diskimage: sniff, inspect and (feature `convert`) convert virtual machine disk images.
#![forbid(unsafe_code)]
