//! `lookout.DepthwiseConv` and `lookout.QDepthwiseConv`: depthwise convolutions (one filter
//! per channel), float or quantized, on lookout's depthwise kernels: eight channels at a time
//! ([`depthwise8`], where the CPU has AVX2 and FMA) and the remaining channels plane by plane
//! ([`depthwise::plane`]), each a part of its own for the team ([`team::for_each`]).
//!
//! Wired from the ONNX op types [`Q_DEPTHWISE`] and [`F_DEPTHWISE`] by [`super::conv`], with
//! the filters, biases, scales and zero points read once from the model's constants. The
//! convolution arithmetic is the kernels'.
//!
//! [`Q_DEPTHWISE`]: super::names::Q_DEPTHWISE
//! [`F_DEPTHWISE`]: super::names::F_DEPTHWISE

use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use super::glue::impl_op;

use crate::attrs::{floats, konst, per_channel, q_operands, Attrs};
use crate::isa::Isa;
use crate::kernels::depthwise::{self, Finish, Geometry};
#[cfg(target_arch = "x86_64")]
use crate::kernels::depthwise8;
use crate::quant::{PlaneIn, QuantOut};
use crate::team::{self, Shared};

/// Wires a quantized [`DepthwiseConv`] for the QLinearConv `inputs` (every operand but `x` a
/// constant), with the convolution attributes `attrs`.
pub(super) fn wire_quant(
    attrs: &Attrs,
    prefix: &str,
    model: &mut TypedModel,
    inputs: &[OutletId],
) -> TractResult<TVec<OutletId>> {
    let q = q_operands(model, inputs)?;
    let channels = model
        .outlet_fact(inputs[0])?
        .shape
        .get(1)
        .and_then(|d| d.to_usize().ok());
    let (c, kh, kw) = kernel_dims(&q.w_shape, channels)?;
    let taps: Vec<f32> =
        q.w.chunks(kh * kw)
            .zip(&q.w_zero)
            .flat_map(|(k, &z)| k.iter().map(move |&v| (v - z) as f32))
            .collect();
    let op = DepthwiseConv {
        attrs: attrs.clone(),
        channels: c,
        kernel: [kh, kw],
        taps: Arc::new(taps),
        bias: Arc::new(q.bias.iter().map(|&b| b as f32).collect()),
        kind: Kind::Quant {
            x_dt: q.x_dt,
            x_zero: q.x_zero as f32,
            y_dt: q.y_dt,
            y_zero: q.y_zero,
            qmin: q.qmin,
            qmax: q.qmax,
            multipliers: Arc::new(q.multipliers),
        },
        isa: Isa::detect(),
    };
    model.wire_node(prefix, op, &inputs[..1])
}

/// Wires a float [`DepthwiseConv`] for the Conv `inputs` (x, constant weights [C, 1, KH, KW],
/// optional constant bias), its output clipped to `clip`.
pub(super) fn wire_float(
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
    let (c, kh, kw) = kernel_dims(w.shape(), channels)?;
    let bias = match inputs.get(2) {
        Some(b) => per_channel(floats(konst(model, *b, "the bias")?.as_ref())?, c, "bias")?,
        None => vec![0.0; c],
    };
    let (min, max) = clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let op = DepthwiseConv {
        attrs: attrs.clone(),
        channels: c,
        kernel: [kh, kw],
        taps: Arc::new(floats(&w)?),
        bias: Arc::new(bias),
        kind: Kind::Float { min, max },
        isa: Isa::detect(),
    };
    model.wire_node(prefix, op, &inputs[..1])
}

/// Checks the kernel tensor [C, 1, KH, KW] against the input's channels.
fn kernel_dims(s: &[usize], channels: Option<usize>) -> TractResult<(usize, usize, usize)> {
    ensure!(
        s.len() == 4 && s[1] == 1,
        "depthwise convolution: kernel shape {s:?} is not [channels, 1, kh, kw]"
    );
    if let Some(c) = channels {
        ensure!(
            s[0] == c,
            "depthwise convolution: {} filters for {c} input channels",
            s[0]
        );
    }
    ensure!(
        depthwise::supports(s[2], s[3]),
        "depthwise convolution: kernel {}x{} has more than {} taps",
        s[2],
        s[3],
        depthwise::MAX_TAPS
    );
    Ok((s[0], s[2], s[3]))
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Float {
        min: f32,
        max: f32,
    },
    Quant {
        x_dt: DatumType,
        x_zero: f32,
        y_dt: DatumType,
        y_zero: f32,
        qmin: f32,
        qmax: f32,
        /// x_scale * w_scale[c] / y_scale
        multipliers: Arc<Vec<f32>>,
    },
}

/// The typed operator: input [N, C, H, W] -> output [N, C, OH, OW]; weights baked in.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv {
    attrs: Attrs,
    channels: usize,
    kernel: [usize; 2],
    /// [C][KH * KW]; quantized: `w - w_zero`.
    taps: Arc<Vec<f32>>,
    /// Per channel; quantized: the int32 bias as float.
    bias: Arc<Vec<f32>>,
    kind: Kind,
    isa: Isa,
}

impl DepthwiseConv {
    fn geometry(&self, h: usize, w: usize) -> TractResult<Geometry> {
        self.attrs.geometry(self.kernel, h, w)
    }

    fn run<I: PlaneIn + Datum, O: QuantOut + Datum>(
        &self,
        x: &[I],
        out: &mut [O],
        outf: &mut [f32],
        n: usize,
        g: &Geometry,
    ) {
        // Eight channels at a time where the CPU has AVX2 (`depthwise8.rs`), the remaining
        // channels plane by plane: each a part of its own, on this thread or shared with an
        // idle worker (`team`).
        let blocks = self.blocks();
        let per_image = blocks + self.channels - blocks * BLOCK8;
        let (out, outf) = (Shared::new(out), Shared::new(outf));
        team::for_each(n * per_image, |u| {
            let (b, j) = (u / per_image, u % per_image);
            if j < blocks {
                self.block(&out, &outf, x, b, j * BLOCK8, g);
            } else {
                self.plane(&out, &outf, x, b, blocks * BLOCK8 + j - blocks, g);
            }
        });
    }

    /// Channel `c` of image `b`, plane by plane ([`depthwise::plane`]).
    fn plane<I: PlaneIn + Datum, O: QuantOut + Datum>(
        &self,
        out: &Shared<'_, O>,
        outf: &Shared<'_, f32>,
        x: &[I],
        b: usize,
        c: usize,
        g: &Geometry,
    ) {
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        let taps_len = g.kh * g.kw;
        let i = b * self.channels + c;
        let src = &x[i * plane_in..(i + 1) * plane_in];
        let taps = &self.taps[c * taps_len..(c + 1) * taps_len];
        let bias = self.bias[c];
        let outs = (i * plane_out, (i + 1) * plane_out);
        match &self.kind {
            Kind::Float { min, max } => depthwise::plane::<I, O>(
                self.isa,
                g,
                src,
                0.0,
                taps,
                bias,
                Finish::Float {
                    // SAFETY: channel `c` of image `b` is this part's alone.
                    out: unsafe { outf.range(outs.0, outs.1) },
                    min: *min,
                    max: *max,
                },
            ),
            Kind::Quant {
                x_zero,
                y_zero,
                qmin,
                qmax,
                multipliers,
                ..
            } => depthwise::plane::<I, O>(
                self.isa,
                g,
                src,
                *x_zero,
                taps,
                bias,
                Finish::Quant {
                    // SAFETY: as above.
                    out: unsafe { out.range(outs.0, outs.1) },
                    multiplier: multipliers[c],
                    zero: *y_zero as i32,
                    lo: qmin - y_zero,
                    hi: qmax - y_zero,
                },
            ),
        }
    }

    /// How many blocks of eight channels per image run on [`depthwise8`] (where the CPU has
    /// AVX2), from channel 0 on.
    fn blocks(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.isa.avx2() {
            return self.channels / BLOCK8;
        }
        0
    }

    /// Channels `c..c + 8` of image `b` on [`depthwise8`] (only where [`Self::blocks`] > 0).
    #[allow(unused_variables)]
    fn block<I: PlaneIn + Datum, O: QuantOut + Datum>(
        &self,
        out: &Shared<'_, O>,
        outf: &Shared<'_, f32>,
        x: &[I],
        b: usize,
        c: usize,
        g: &Geometry,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use depthwise8::Finish8;
            assert!(self.isa.avx2());
            let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
            let taps_len = g.kh * g.kw;
            let i = b * self.channels + c;
            let x = &x[i * plane_in..(i + BLOCK8) * plane_in];
            let taps = &self.taps[c * taps_len..(c + BLOCK8) * taps_len];
            let bias = &self.bias[c..c + BLOCK8];
            let outs = (i * plane_out, (i + BLOCK8) * plane_out);
            match &self.kind {
                // SAFETY: both AVX2 variants are only constructed after run-time detection of
                // AVX2 and FMA (asserted); channels c..c + 8 of image b are this part's alone.
                Kind::Float { min, max } => unsafe {
                    depthwise8::block8::<I, O>(
                        g,
                        x,
                        0.0,
                        taps,
                        bias,
                        Finish8::Float {
                            out: outf.range(outs.0, outs.1),
                            min: *min,
                            max: *max,
                        },
                    )
                },
                Kind::Quant {
                    x_zero,
                    y_zero,
                    qmin,
                    qmax,
                    multipliers,
                    ..
                } =>
                // SAFETY: as for the float outputs.
                unsafe {
                    depthwise8::block8::<I, O>(
                        g,
                        x,
                        *x_zero,
                        taps,
                        bias,
                        Finish8::Quant {
                            out: out.range(outs.0, outs.1),
                            multipliers: &multipliers[c..c + BLOCK8],
                            zero: *y_zero as i32,
                            lo: qmin - y_zero,
                            hi: qmax - y_zero,
                        },
                    )
                },
            }
        }
    }
}

/// Channels per [`depthwise8`] block.
#[cfg(target_arch = "x86_64")]
const BLOCK8: usize = depthwise8::BLOCK;
#[cfg(not(target_arch = "x86_64"))]
const BLOCK8: usize = 8;

impl_op!(DepthwiseConv + Eq, |op|
    name: match op.kind {
        Kind::Float { .. } => "lookout.DepthwiseConv",
        Kind::Quant { .. } => "lookout.QDepthwiseConv",
    },
    info: format!(
        "channels: {} kernel: {:?} {:?} kernels: {}",
        op.channels,
        op.kernel,
        op.attrs,
        op.isa.vector_name()
    ),
);

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.len() == 4 && shape[1] == self.channels,
            "depthwise convolution: input shape {shape:?}"
        );
        let g = self.geometry(shape[2], shape[3])?;
        let out_shape = [shape[0], self.channels, g.oh, g.ow];
        let xv = x.try_as_plain_ram()?;
        let out = match &self.kind {
            Kind::Float { .. } => {
                // SAFETY: f32 has no invalid bit patterns, and `run` writes every output value
                // (each plane's rows, all columns).
                let mut t = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
                let mut ov = t.try_as_plain_ram_mut()?;
                let o = ov.as_slice_mut::<f32>()?;
                self.run::<f32, u8>(xv.as_slice::<f32>()?, &mut [], o, shape[0], &g);
                t
            }
            Kind::Quant { x_dt, y_dt, .. } => {
                // SAFETY: 8-bit integers have no invalid bit patterns, and `run` writes every
                // output value.
                let mut t = unsafe { Tensor::uninitialized_dt(*y_dt, &out_shape)? };
                let mut ov = t.try_as_plain_ram_mut()?;
                match (x_dt, y_dt) {
                    (DatumType::U8, DatumType::U8) => self.run(
                        xv.as_slice::<u8>()?,
                        ov.as_slice_mut::<u8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    (DatumType::U8, DatumType::I8) => self.run(
                        xv.as_slice::<u8>()?,
                        ov.as_slice_mut::<i8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    (DatumType::I8, DatumType::U8) => self.run(
                        xv.as_slice::<i8>()?,
                        ov.as_slice_mut::<u8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    (DatumType::I8, DatumType::I8) => self.run(
                        xv.as_slice::<i8>()?,
                        ov.as_slice_mut::<i8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    other => bail!("quantized depthwise convolution: types {other:?}"),
                }
                t
            }
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(
            s.rank() == 4,
            "depthwise convolution: input rank {}",
            s.rank()
        );
        let (h, w) = (s[2].to_usize()?, s[3].to_usize()?);
        let g = self.geometry(h, w)?;
        let dt = match &self.kind {
            Kind::Float { .. } => f32::datum_type(),
            Kind::Quant { y_dt, .. } => *y_dt,
        };
        Ok(tvec!(dt.fact(&[
            s[0].clone(),
            s[1].clone(),
            g.oh.to_dim(),
            g.ow.to_dim()
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two images of twelve channels: where the CPU has AVX2, channels 0-7 of each image go to
    /// the eight-channel kernel and 8-11 plane by plane; every output equals, bit for bit, what
    /// the plane kernel gives channel by channel.
    #[test]
    fn depthwise_blocks_and_remaining_channels_match_the_plane_kernel() {
        let isa = Isa::detect();
        let (n, channels, h, w) = (2, 12, 7, 7);
        let op = DepthwiseConv {
            attrs: Attrs {
                strides: [1, 1],
                dilations: [1, 1],
                pads: [1, 1, 1, 1],
            },
            channels,
            kernel: [3, 3],
            taps: Arc::new(
                (0..channels * 9)
                    .map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0)
                    .collect(),
            ),
            bias: Arc::new((0..channels).map(|c| c as f32 * 0.25 - 1.0).collect()),
            kind: Kind::Float {
                min: -1.0,
                max: 6.0,
            },
            isa,
        };
        let g = op.geometry(h, w).expect("geometry");
        let (plane_in, plane_out) = (h * w, g.oh * g.ow);
        let x: Vec<f32> = (0..n * channels * plane_in)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut got = vec![f32::NAN; n * channels * plane_out];
        op.run::<f32, u8>(&x, &mut [], &mut got, n, &g);
        let mut want = vec![0f32; n * channels * plane_out];
        for i in 0..n * channels {
            let c = i % channels;
            depthwise::plane::<f32, u8>(
                isa,
                &g,
                &x[i * plane_in..(i + 1) * plane_in],
                0.0,
                &op.taps[c * 9..(c + 1) * 9],
                op.bias[c],
                Finish::Float {
                    out: &mut want[i * plane_out..(i + 1) * plane_out],
                    min: -1.0,
                    max: 6.0,
                },
            );
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a.to_bits() == b.to_bits(), "output {i}: {a} vs {b}");
        }
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // The first eight channels ran as one block.
            assert_eq!(op.blocks(), 1);
        }
    }
}
