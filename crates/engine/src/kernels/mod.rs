//! lookout's kernels.

pub mod depthwise;
#[cfg(target_arch = "x86_64")]
pub mod depthwise8;
pub(crate) mod elementwise;
pub(crate) mod fgemm;
pub(crate) mod im2col;
pub(crate) mod qdot;
pub(crate) mod qgemm;
pub(crate) mod qgemv;
pub(crate) mod requant;
