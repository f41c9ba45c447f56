//! `lookout.QConv`: a quantized convolution with one group (any kernel; ONNX op type
//! [`Q_CONV`], wired from a QLinearConv node by [`super::conv`]) on lookout's integer matrix
//! product ([`qgemm::conv`]).
//!
//! The weights are packed once, when the operator is wired, for the kernel [`Isa::detect`]
//! chose (the dot-product tile's i8 panels, or the i16 ones), and `x_zero` is folded into each
//! channel's bias. Packing the activations, the tiles and the requantization are the kernel's.
//!
//! [`Q_CONV`]: super::names::Q_CONV

use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use super::glue::impl_op;

use crate::attrs::{q_operands, Attrs};
use crate::isa::Isa;
use crate::kernels::im2col::Im2col;
use crate::kernels::qgemm::{self, PackedWeights};
use crate::kernels::requant::{Act, Requant};
use crate::quant::QuantOut;

/// Wires a [`QConv`] for the group-1 QLinearConv `inputs` (every operand but `x` a
/// constant), with the convolution attributes `attrs`.
pub(super) fn wire(
    attrs: &Attrs,
    prefix: &str,
    model: &mut TypedModel,
    inputs: &[OutletId],
) -> TractResult<TVec<OutletId>> {
    let q = q_operands(model, inputs)?;
    let ws = &q.w_shape;
    ensure!(
        ws.len() == 4,
        "quantized convolution: kernel shape {ws:?} is not 2-D"
    );
    let channels = model
        .outlet_fact(inputs[0])?
        .shape
        .get(1)
        .and_then(|d| d.to_usize().ok());
    if let Some(c) = channels {
        ensure!(
            ws[1] == c,
            "quantized convolution: kernel {ws:?} for {c} input channels"
        );
    }
    let (m, k) = (ws[0], ws[1] * ws[2] * ws[3]);
    let isa = Isa::detect();
    let packed = PackedWeights::new(&q.w, m, k, &q.w_zero, isa);
    let requant = (0..m)
        .map(|r| Requant {
            bias: q.bias[r] - q.x_zero * packed.row_sums[r],
            multiplier: q.multipliers[r],
            zero: q.y_zero as i32,
            lo: q.qmin - q.y_zero,
            hi: q.qmax - q.y_zero,
        })
        .collect();
    let op = QConv {
        attrs: attrs.clone(),
        c: ws[1],
        kernel: [ws[2], ws[3]],
        weights: Arc::new(packed),
        requant: Arc::new(requant),
        x_dt: q.x_dt,
        x_zero: q.x_zero as i16,
        y_dt: q.y_dt,
        isa,
    };
    model.wire_node(prefix, op, &inputs[..1])
}

/// The typed quantized convolution: [N, C, H, W] -> [N, M, OH, OW], weights packed in.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    attrs: Attrs,
    c: usize,
    kernel: [usize; 2],
    weights: Arc<PackedWeights>,
    requant: Arc<Vec<Requant>>,
    x_dt: DatumType,
    x_zero: i16,
    y_dt: DatumType,
    isa: Isa,
}

impl QConv {
    fn im2col(&self, h: usize, w: usize) -> TractResult<Im2col> {
        let a = &self.attrs;
        let (oh, ow) = a.output_hw(self.kernel, h, w)?;
        Ok(Im2col {
            c: self.c,
            h,
            w,
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride: a.strides,
            dil: a.dilations,
            pad_top: a.pads[0],
            pad_left: a.pads[1],
            oh,
            ow,
        })
    }

    fn run<I: Act, O: QuantOut>(&self, x: &[I], out: &mut [O], n: usize, g: &Im2col) {
        let (img_in, img_out) = (g.c * g.h * g.w, self.weights.m * g.pixels());
        QSCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            for b in 0..n {
                qgemm::conv(
                    self.isa,
                    &self.weights,
                    g,
                    &x[b * img_in..(b + 1) * img_in],
                    self.x_zero,
                    &self.requant,
                    &mut s,
                    &mut out[b * img_out..(b + 1) * img_out],
                );
            }
        })
    }
}

thread_local! {
    /// Each worker thread's packed-activation buffer, reused from run to run.
    static QSCRATCH: std::cell::RefCell<qgemm::Scratch> = std::cell::RefCell::new(qgemm::Scratch::default());
}

impl_op!(QConv + Eq, |op|
    name: "lookout.QConv",
    info: format!(
        "m: {} k: {} kernel: {:?} {:?} kernels: {}",
        op.weights.m,
        op.weights.k,
        op.kernel,
        op.attrs,
        op.weights.kernels(op.isa)
    ),
);

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.len() == 4 && shape[1] == self.c,
            "quantized convolution: input shape {shape:?}"
        );
        let g = self.im2col(shape[2], shape[3])?;
        // SAFETY: 8-bit integers have no invalid bit patterns, and qgemm::conv writes every
        // output value (every channel's every pixel).
        let mut t = unsafe {
            Tensor::uninitialized_dt(self.y_dt, &[shape[0], self.weights.m, g.oh, g.ow])?
        };
        {
            let xv = x.try_as_plain_ram()?;
            let mut ov = t.try_as_plain_ram_mut()?;
            match (self.x_dt, self.y_dt) {
                (DatumType::U8, DatumType::U8) => {
                    self.run(xv.as_slice::<u8>()?, ov.as_slice_mut::<u8>()?, shape[0], &g)
                }
                (DatumType::U8, DatumType::I8) => {
                    self.run(xv.as_slice::<u8>()?, ov.as_slice_mut::<i8>()?, shape[0], &g)
                }
                (DatumType::I8, DatumType::U8) => {
                    self.run(xv.as_slice::<i8>()?, ov.as_slice_mut::<u8>()?, shape[0], &g)
                }
                (DatumType::I8, DatumType::I8) => {
                    self.run(xv.as_slice::<i8>()?, ov.as_slice_mut::<i8>()?, shape[0], &g)
                }
                other => bail!("quantized convolution: types {other:?}"),
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(
            s.rank() == 4,
            "quantized convolution: input rank {}",
            s.rank()
        );
        let g = self.im2col(s[2].to_usize()?, s[3].to_usize()?)?;
        Ok(tvec!(self.y_dt.fact(&[
            s[0].clone(),
            self.weights.m.to_dim(),
            g.oh.to_dim(),
            g.ow.to_dim()
        ])))
    }

    as_op!();
}
