//! The ONNX op types of lookout's operators: the names `rewrite::qdq` gives the nodes it puts
//! on lookout's kernels, and under which [`super::register`] tells tract's ONNX front end how
//! to build each operator. Each name's doc says the inputs and attributes a node of that type
//! carries and the typed operator it becomes (its name in tract's plans and in profiles).
//!
//! The one contract between the rewrites and the operators: the rewrites import nothing else
//! from `ops`, and a name is changed here or nowhere.

use crate::kernels::depthwise;

/// A quantized depthwise convolution (QLinearConv's inputs and attributes; filters of up to
/// [`depthwise::MAX_TAPS`] taps): `lookout.QDepthwiseConv`.
pub const Q_DEPTHWISE: &str = "LookoutQLinearDepthwiseConv";
/// A float depthwise convolution (Conv's inputs and attributes, filters of up to
/// [`depthwise::MAX_TAPS`] taps; optional `lookout_min`/`lookout_max` for a fused Relu or
/// Clip): `lookout.DepthwiseConv`.
pub const F_DEPTHWISE: &str = "LookoutDepthwiseConv";
/// A quantized group-1 convolution (QLinearConv's inputs and attributes): `lookout.QConv`.
pub const Q_CONV: &str = "LookoutQLinearConv";
/// A float group-1 convolution (Conv's inputs and attributes; optional
/// `lookout_min`/`lookout_max` for a fused Relu or Clip): `lookout.Conv`.
pub const F_CONV: &str = "LookoutConv";

/// Whether [`Q_DEPTHWISE`] and [`F_DEPTHWISE`] take a `kh` x `kw` filter (`rewrite::qdq` asks
/// before renaming a node; the operators check again when they are wired).
pub fn takes_depthwise_filter(kh: usize, kw: usize) -> bool {
    depthwise::supports(kh, kw)
}

/// A folded `DequantizeLinear x2 -> Add -> QuantizeLinear`: `lookout.QAdd`. Inputs: `a,
/// a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point` (QLinearAdd's),
/// every scale and zero point a per-tensor constant.
pub const Q_ADD: &str = "LookoutQLinearAdd";
/// The same with `Mul`: `lookout.QMul`; inputs as [`Q_ADD`]'s.
pub const Q_MUL: &str = "LookoutQLinearMul";

/// A per-tensor QuantizeLinear of a float tensor (QuantizeLinear's inputs):
/// `lookout.QuantizeLinear`.
pub const Q_QUANTIZE: &str = "LookoutQuantizeLinear";
/// A per-tensor DequantizeLinear of an 8-bit tensor to float32 (DequantizeLinear's inputs):
/// `lookout.DequantizeLinear`.
pub const Q_DEQUANTIZE: &str = "LookoutDequantizeLinear";
/// A 256-entry lookup (inputs: the 8-bit tensor, and the table: 256 8-bit values, entry `k`
/// for the input whose bit pattern is `k`): `lookout.QTable`.
pub const Q_TABLE: &str = "LookoutQTable";

/// A folded `DequantizeLinear -> Gemm -> QuantizeLinear` (a classifier): `lookout.QGemm`.
/// Inputs: `a, a_scale, a_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point[, bias]`
/// (constants but `a`; the bias float, one per output); attribute `transB` as Gemm's (`w` is
/// [N, K] when 1, [K, N] when 0).
pub const Q_GEMM: &str = "LookoutQLinearGemm";
