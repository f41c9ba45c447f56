//! What the two 8-bit matrix products, [`super::qgemm`]'s i16 tile and [`super::qdot`]'s
//! dot-product tile, share after their tiles: the activation types ([`Act`]), the tile's width
//! in pixels ([`NR`]), and each output channel's requantization of its exact i32 sums
//! ([`Requant`], [`requant_row`]: onnxruntime's `clamp(round_half_even(f32(acc) * multiplier)
//! + zero)`). The tiles themselves, and their vector forms of the requantization, are theirs.

use crate::quant::{clamp, round_to_i32, QuantOut};

/// Pixels per tile, in both products: each tile row is `NR` accumulators.
pub const NR: usize = 16;

/// An 8-bit activation type, and what the dot-product tile ([`super::qdot`]) subtracts from
/// its values to make them signed.
pub trait Act: Copy + Into<i16> + Send + Sync {
    const OFFSET: i16;
}

impl Act for u8 {
    const OFFSET: i16 = 128;
}

impl Act for i8 {
    const OFFSET: i16 = 0;
}

/// Requantization of one output channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requant {
    /// bias - x_zero * row_sum, added to the accumulator
    pub bias: i32,
    pub multiplier: f32,
    pub zero: i32,
    /// qmin - zero, qmax - zero
    pub lo: f32,
    pub hi: f32,
}

/// Requantizes one row of accumulators, each plus `extra`, into `dst` (its length of them).
#[inline(always)]
pub(crate) fn requant_row<O: QuantOut>(row: &[i32; NR], q: &Requant, extra: i32, dst: &mut [O]) {
    let bias = q.bias.wrapping_add(extra);
    for (o, &a) in dst.iter_mut().zip(row.iter()) {
        // wrapping: |acc + bias| < 2^31 (qgemm's module notes); no overflow check in the hot
        // loop.
        let v = clamp(a.wrapping_add(bias) as f32 * q.multiplier, q.lo, q.hi);
        *o = O::from_i32(round_to_i32(v) + q.zero);
    }
}
