//! lookout's kernels.

pub mod depthwise;
#[cfg(target_arch = "x86_64")]
pub mod depthwise8;
pub mod fgemm;
pub mod qdot;
pub mod qgemm;
