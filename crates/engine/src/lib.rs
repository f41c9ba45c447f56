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
//! One folder per role, as tract-linalg's: kernels know nothing of tract, operators call
//! kernels, rewrites know only the operators' op-type names. The public API is [`onnx`],
//! [`rewrite()`], [`Kernels`], [`Isa`], [`contrib`], [`team`] and [`profile`].
//!
//! - `lib.rs` (this file): [`Kernels`] (whose kernels run a model), [`onnx`] (tract's ONNX
//!   front end with lookout's operators registered) and [`rewrite()`] (the graph rewrites for a
//!   [`Kernels`] choice).
//! - `rewrite/`: the ONNX graph rewrites, on the protobuf, before tract parses it.
//!   - [`contrib`] (`contrib/mod.rs`, `translate.rs`): onnxruntime's `com.microsoft` contrib
//!     operators (QLinearAdd, QLinearGlobalAveragePool, QGemm, ...) into standard ONNX chains;
//!     [`contrib::parse`] reads and parses a model with them translated.
//!   - `qdq/` (`mod.rs`, `conv.rs`, `eightbit.rs`): QDQ chains folded into QLinearConv and
//!     lookout's 8-bit operators, convolutions renamed onto lookout's kernels, quantized matrix
//!     weights dequantized once.
//! - `ops/`: the tract operators, built from the renamed nodes; `ops::register` adds them
//!   to tract's front end.
//!   - `names.rs`: the op-type names (`LookoutQLinearConv`, ...), the rewrites' one import.
//!   - `conv.rs`: the convolutions' ONNX front end (inference rules, wiring) onto
//!     `depthwise.rs` (`lookout.DepthwiseConv`, `lookout.QDepthwiseConv`), `qconv.rs`
//!     (`lookout.QConv`) and `fconv.rs` (`lookout.Conv`).
//!   - `qbinary.rs` (`lookout.QAdd`, `lookout.QMul`), `qunary.rs` (`lookout.QuantizeLinear`,
//!     `lookout.DequantizeLinear`, `lookout.QTable`), `qgemv.rs` (`lookout.QGemm`): the 8-bit
//!     operators of QDQ models.
//!   - `softmax.rs`: ONNX `Softmax` in place of tract's, which QDQ graphs break.
//!   - `glue.rs`: the tract boilerplate every operator shares (`impl_op!`, shape rules).
//! - [`kernels`]: plain functions over slices, one file per kernel with its CPU variants.
//!   - [`kernels::depthwise`] (one plane) and [`kernels::depthwise8`] (eight channels, AVX2):
//!     depthwise convolutions, float and 8-bit.
//!   - `qgemm.rs` (i16 tile, `vpmaddwd`) and `qdot.rs` (`sdot`, `vpdpbusd`): the 8-bit
//!     convolutions' integer matrix product; `im2col.rs` and `requant.rs`, what both share.
//!   - `fgemm.rs`: the float convolutions' matrix product (AVX2, AVX-512F, NEON).
//!   - `qgemv.rs`: an 8-bit classifier's integer dot products.
//!   - `elementwise.rs`: the 8-bit add/mul, QuantizeLinear and DequantizeLinear loops.
//! - Shared pieces: [`Isa`] (`isa.rs`: the CPU features, detected once, that every kernel
//!   dispatches on), `quant.rs` (the 8-bit element types, QuantizeLinear, rounding and
//!   clamping), `attrs.rs` (readers of operator attributes and constant inputs).
//! - [`team`] (`team/`: `mod.rs`, `job.rs`, `helper.rs`, `shared.rs`): an idle worker thread
//!   helping a busy one with its frame (`pipeline.assist`); the kernels split their work with
//!   [`team::for_each`].
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
    /// the 8-bit operators of QDQ models; tract's for everything else.
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

/// tract's ONNX front end with lookout's operators registered (`Softmax` and every op type
/// the rewrites write).
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
