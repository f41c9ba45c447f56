//! `lookout.Conv`: a float convolution with one group (ONNX op type [`F_CONV`], wired from a
//! `Conv` node by [`super::conv`]) on lookout's float matrix product ([`fgemm`]).
//!
//! The operator packs the weights once, when it is wired, and per run lays a kernel larger
//! than 1x1 out as im2col rows in a per-thread buffer ([`fgemm::im2col`]), then calls
//! [`fgemm::matmul`], which applies the bias and a fused Relu/Clip as it stores. How the
//! product is tiled and which CPU code runs it is the kernel's.
//!
//! [`F_CONV`]: super::names::F_CONV
//! [`fgemm`]: crate::kernels::fgemm
//! [`fgemm::im2col`]: crate::kernels::fgemm::im2col
//! [`fgemm::matmul`]: crate::kernels::fgemm::matmul

use std::cell::RefCell;
use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use super::glue::impl_op;

use crate::attrs::{floats, konst, per_channel, Attrs};
use crate::isa::Isa;
use crate::kernels::depthwise::Geometry;
use crate::kernels::fgemm::{im2col, matmul, Epilogue, Packed, Shape};

thread_local! {
    /// Per-thread scratch: the im2col rows, and the shape they were laid out for. Reused
    /// across runs, so the steady state allocates nothing.
    static COLS: RefCell<(Vec<f32>, Option<Shape>)> = const { RefCell::new((Vec::new(), None)) };
}

/// Wires [`Conv`] for the float convolution `inputs` (x, constant weights [M, C, KH, KW],
/// optional constant bias), its output clipped to `clip`.
pub(crate) fn wire(
    attrs: &Attrs,
    clip: Option<(f32, f32)>,
    prefix: &str,
    model: &mut TypedModel,
    inputs: &[OutletId],
) -> TractResult<TVec<OutletId>> {
    let channels = model
        .outlet_fact(inputs[0])?
        .shape
        .get(1)
        .and_then(|d| d.to_usize().ok());
    let w = konst(model, inputs[1], "the weights")?;
    let s = w.shape();
    ensure!(s.len() == 4, "convolution: kernel shape {s:?} is not 4-D");
    let (m, c, kh, kw) = (s[0], s[1], s[2], s[3]);
    if let Some(ci) = channels {
        ensure!(
            ci == c,
            "convolution: kernel {s:?} takes {c} channels, the input has {ci}"
        );
    }
    let bias = match inputs.get(2) {
        Some(b) => per_channel(floats(konst(model, *b, "the bias")?.as_ref())?, m, "bias")?,
        None => vec![0.0; m],
    };
    let (lo, hi) = clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let op = Conv {
        attrs: attrs.clone(),
        kernel: [kh, kw],
        channels: c,
        filters: m,
        weights: Arc::new(Packed::new(&floats(&w)?, m, c * kh * kw)),
        bias: Arc::new(bias),
        lo,
        hi,
        isa: Isa::detect(),
    };
    model.wire_node(prefix, op, &inputs[..1])
}

/// The typed operator: input [N, C, H, W] -> output [N, M, OH, OW]; weights baked in.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    attrs: Attrs,
    kernel: [usize; 2],
    channels: usize,
    filters: usize,
    weights: Arc<Packed>,
    bias: Arc<Vec<f32>>,
    lo: f32,
    hi: f32,
    isa: Isa,
}

impl Conv {
    fn geometry(&self, h: usize, w: usize) -> TractResult<Geometry> {
        self.attrs.geometry(self.kernel, h, w)
    }

    /// A 1x1 kernel, stride 1, no padding: the input planes are the matrix.
    fn direct(&self) -> bool {
        self.kernel == [1, 1] && self.attrs.strides == [1, 1] && self.attrs.pads == [0; 4]
    }
}

impl_op!(Conv + Eq, |op|
    name: "lookout.Conv",
    info: format!(
        "{} -> {} channels, kernel: {:?} {:?} kernels: {}",
        op.channels,
        op.filters,
        op.kernel,
        op.attrs,
        op.isa.float_tile_name()
    ),
);

impl EvalOp for Conv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.len() == 4 && shape[1] == self.channels,
            "convolution: input shape {shape:?}, expected [N, {}, H, W]",
            self.channels
        );
        let g = self.geometry(shape[2], shape[3])?;
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        // SAFETY: f32 has no invalid bit patterns, and matmul writes every output value.
        let mut t = unsafe { Tensor::uninitialized::<f32>(&[shape[0], self.filters, g.oh, g.ow])? };
        let mut ov = t.try_as_plain_ram_mut()?;
        let out = ov.as_slice_mut::<f32>()?;
        let xv = x.try_as_plain_ram()?;
        let xs = xv.as_slice::<f32>()?;
        let epi = Epilogue {
            bias: &self.bias,
            lo: self.lo,
            hi: self.hi,
        };
        for b in 0..shape[0] {
            let src = &xs[b * self.channels * plane_in..(b + 1) * self.channels * plane_in];
            let dst = &mut out[b * self.filters * plane_out..(b + 1) * self.filters * plane_out];
            if self.direct() {
                matmul(self.isa, &self.weights, src, plane_in, plane_out, epi, dst);
            } else {
                COLS.with(|c| {
                    let (cols, last) = &mut *c.borrow_mut();
                    im2col(src, self.channels, &g, cols, last);
                    matmul(
                        self.isa,
                        &self.weights,
                        cols,
                        plane_out,
                        plane_out,
                        epi,
                        dst,
                    );
                });
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Conv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 4, "convolution: input rank {}", s.rank());
        let g = self.geometry(s[2].to_usize()?, s[3].to_usize()?)?;
        Ok(tvec!(f32::fact(&[
            s[0].clone(),
            self.filters.to_dim(),
            g.oh.to_dim(),
            g.ow.to_dim()
        ])))
    }

    as_op!();
}
