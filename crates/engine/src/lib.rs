//! `lookout-engine`: the inference engine behind `lookout`, tract plus lookout's own
//! convolution kernels, 8-bit operators and ONNX graph rewrites.
//!
//! It takes an ONNX model as tract's protobuf and gives back a graph that tract parses with
//! lookout's operators in place of the slow paths tract 0.23 has for quantized and depthwise
//! convolutions; tract then optimises and runs the plan. It knows nothing of frames, configs,
//! sources or sinks: the daemon (`lookout`) loads files, preprocesses frames and reads scores.
//!
//! # Layout
//!
//! - The front end: [`onnx`] (tract's ONNX parser with lookout's operators registered) and
//!   [`rewrite`] (the graph rewrites for a [`Kernels`] choice, in order: [`contrib`], then
//!   [`qdq`]); [`Kernels::describe`] says which kernels a model runs on.
//! - [`contrib`]: onnxruntime's `com.microsoft` contrib operators (QLinearAdd,
//!   QLinearGlobalAveragePool, ...) translated into standard ONNX ones.
//! - [`qdq`]: DequantizeLinear/QuantizeLinear chains folded into lookout's 8-bit operators.
//! - Operators (tract ops, built from the renamed ONNX nodes): [`fastops`] (quantized and
//!   depthwise convolutions), [`fconv`] (float convolutions), [`qelementwise`] (8-bit Add and
//!   Mul), [`qunary`] (QuantizeLinear, DequantizeLinear, lookup tables), [`qgemv`] (8-bit
//!   classifier heads), [`softmax`] (a Softmax tract gets right in QDQ graphs).
//! - Kernels (plain functions over slices, a portable version beside each SIMD one):
//!   [`depthwise`] and [`depthwise8`] (depthwise convolutions), [`qgemm`] and [`qdot`] (8-bit
//!   matrix products: AVX2, VNNI/AVX-512, NEON `sdot`), [`fconv`]'s float tile.
//! - [`Isa`]: the CPU features detected once, which every kernel dispatches on.
//! - [`team`]: an idle worker thread helping a busy one with its model run (`pipeline.assist`).
//! - [`profile`]: per-node timing of a plan (`lookout bench --profile`).

mod attrs;
mod isa;
pub mod kernels;
mod ops;
pub mod profile;
mod quant;
mod rewrite;
pub mod team;

pub use isa::Isa;
pub use rewrite::contrib::{self, Refusal, Translation};
use rewrite::qdq;

use serde::Deserialize;
use tract_onnx::pb;

/// Whose kernels run a model's convolutions (`model.kernels` in lookout's config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// lookout's: integer kernels for quantized convolutions, fast depthwise convolutions and
    /// the 8-bit operators of [`qdq`]; tract's for everything else.
    #[default]
    Lookout,
    /// tract's own, for comparison.
    Tract,
}

impl Kernels {
    /// Whose kernels run the model, for `lookout check` and `lookout bench`.
    pub fn describe(self) -> String {
        match self {
            Kernels::Tract => "tract's own (model.kernels = \"tract\")".to_owned(),
            Kernels::Lookout => format!(
                "lookout's for convolutions ({}), tract's for the rest",
                Isa::detect().name()
            ),
        }
    }
}

/// tract's ONNX front end with lookout's operators ([`softmax`], [`fastops`] and the rest).
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx.op_register);
    onnx
}

/// Rewrites `proto` for `kernels`: onnxruntime's contrib operators into standard ones (always:
/// tract has none of them), then, for [`Kernels::Lookout`], QDQ chains and convolutions onto
/// lookout's operators. Returns what was rewritten, or the contrib nodes that could not be.
pub fn rewrite(
    proto: &mut pb::ModelProto,
    kernels: Kernels,
) -> Result<Vec<Translation>, Vec<Refusal>> {
    let mut translations = contrib::rewrite(proto)?;
    if kernels == Kernels::Lookout {
        if let Some(graph) = proto.graph.as_mut() {
            translations.extend(qdq::rewrite(graph));
        }
    }
    Ok(translations)
}
