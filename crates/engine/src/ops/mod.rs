//! lookout's tract operators: each reads its constants once, when tract wires the model, and
//! calls a kernel of [`crate::kernels`] per run.
//!
//! - [`conv`]: the ONNX front end of the convolutions, wiring [`depthwise`]
//!   (`lookout.DepthwiseConv`, `lookout.QDepthwiseConv`), [`qconv`] (`lookout.QConv`) and
//!   [`fconv`] (`lookout.Conv`);
//! - [`qbinary`] (`lookout.QAdd`, `lookout.QMul`), [`qunary`] (`lookout.QuantizeLinear`,
//!   `lookout.DequantizeLinear`, `lookout.QTable`) and [`qgemv`] (`lookout.QGemm`): the 8-bit
//!   operators of QDQ models;
//! - [`softmax`]: ONNX `Softmax` in place of tract's, which QDQ graphs break;
//! - [`names`]: the ONNX op types the rewrites give nodes, the one thing they import from here;
//! - [`glue`]: what every operator's tract impls repeat.
//!
//! [`register`] adds them all to tract's ONNX front end ([`crate::onnx`]).

use tract_onnx::model::OnnxOpRegister;

mod conv;
mod depthwise;
mod fconv;
mod glue;
pub(crate) mod names;
mod qbinary;
mod qconv;
mod qgemv;
mod qunary;
mod softmax;

/// Registers every operator with tract's ONNX front end: `Softmax` in place of tract's, and
/// each op type of [`names`].
pub(crate) fn register(reg: &mut OnnxOpRegister) {
    softmax::register(reg);
    conv::register(reg);
    qbinary::register(reg);
    qunary::register(reg);
    qgemv::register(reg);
}
