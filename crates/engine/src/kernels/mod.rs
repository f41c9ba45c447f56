//! lookout's kernels: plain functions over slices, one file per kernel, each with its CPU
//! variants (AVX2/FMA, AVX-512/VNNI, NEON and `sdot`, portable code) chosen by one `match` on
//! the [`crate::Isa`] its operator detected once, as tract-linalg does. They know nothing of
//! tensors, graphs or tract: the operators (`crate::ops`) read a model's constants and call
//! them; the element types and rounding are `crate::quant`'s.
//!
//! - [`depthwise`]: depthwise convolution of one plane (float and 8-bit);
//! - [`depthwise8`]: the same on eight channels at once (x86-64 with AVX2 and FMA);
//! - `qgemm`: the 8-bit convolutions' integer matrix product, its i16 tile (`vpmaddwd`);
//! - `qdot`: the same product on the dot-product instructions (`sdot`, `vpdpbusd`);
//! - `im2col` and `requant`: what the two 8-bit products share (reading the input as a
//!   matrix; the per-channel requantization);
//! - `fgemm`: the float convolutions' matrix product and im2col;
//! - `qgemv`: the integer dot products of an 8-bit classifier;
//! - `elementwise`: the 8-bit add/mul, QuantizeLinear and DequantizeLinear loops.
//!
//! `depthwise` and `depthwise8` are public for `examples/depthwise.rs`, which times them side
//! by side; the rest is the crate's.

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
