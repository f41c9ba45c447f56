//! lookout's quantized two-input element-wise operators, each one pass in registers where
//! tract 0.23 makes several over float tensors:
//!
//! - **`LookoutQLinearAdd`**: the additions of quantized models (the residual connections of
//!   MobileNet-style networks). A QDQ model writes each as `DequantizeLinear(a),
//!   DequantizeLinear(b) -> Add -> QuantizeLinear` (a QOperator model's QLinearAdd becomes the
//!   same chain in [`crate::rewrite::contrib`]); [`crate::rewrite::qdq`] folds the chain into this operator, which
//!   computes the same definition per element in f32:
//!
//!   ```text
//!   y = saturate(round_half_to_even(((a - a_zero) * a_scale + (b - b_zero) * b_scale) / y_scale) + y_zero)
//!   ```
//!
//!   **`LookoutQLinearMul`** is the same with a product, `((a - a_zero) * a_scale) * ((b -
//!   b_zero) * b_scale)` (MobileNetV3's hard-swish, `x * gate`, and squeeze-excitation scaling,
//!   whose per-channel factor is broadcast over each plane).
//!
//! They quantize by dividing by the scale, as ONNX and onnxruntime define QuantizeLinear
//! (tract multiplies by the reciprocal). Inputs of equal shape take the vector path (AVX2 on
//! x86-64 when present, the portable loop elsewhere: the same f32 operations in the same
//! order, so the same bytes); a per-channel operand broadcast over planes takes the vector
//! path plane by plane, other broadcasts the portable loop over broadcast views. The one-input
//! operators (QuantizeLinear, DequantizeLinear, the 256-entry lookup) are in
//! [`crate::ops::qunary`], with which these share the quantization ([`Quant`]) and the readers of
//! constant scales and zero points.

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_hir::internal::*;

use crate::kernels::depthwise::{Isa, PlaneIn, QuantOut};
use crate::ops::conv::{floats, ints, konst};

/// ONNX op type of the folded addition. Inputs: `a, a_scale, a_zero_point, b, b_scale,
/// b_zero_point, y_scale, y_zero_point` (QLinearAdd's), every scale and zero point a
/// per-tensor constant.
pub const Q_ADD: &str = "LookoutQLinearAdd";

/// ONNX op type of the folded multiplication; inputs as [`Q_ADD`]'s.
pub const Q_MUL: &str = "LookoutQLinearMul";

/// Registers the operators with tract's ONNX front end.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_ADD, |_, _| {
        Ok((expand(QBinExpansion { mul: false }), vec![]))
    });
    reg.insert(Q_MUL, |_, _| {
        Ok((expand(QBinExpansion { mul: true }), vec![]))
    });
}

#[derive(Debug, Clone)]
struct QBinExpansion {
    mul: bool,
}

impl Expansion for QBinExpansion {
    fn name(&self) -> StaticName {
        if self.mul { Q_MUL } else { Q_ADD }.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 8)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[7].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[3].shape, move |s, a, b| {
            s.equals(&outputs[0].shape, multi_broadcast(&[a, b])?)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let op_name = if self.mul {
            "quantized multiplication"
        } else {
            "quantized addition"
        };
        let eight = |outlet: OutletId, what: &str| -> TractResult<DatumType> {
            let dt = model.outlet_fact(outlet)?.datum_type.unquantized();
            ensure!(
                matches!(dt, DatumType::U8 | DatumType::I8),
                "{op_name}: {what} has type {dt:?}, not uint8 or int8"
            );
            Ok(dt)
        };
        let named = |what: &str| format!("{op_name}: {what}");
        let (y, y_dt) = output_quant(model, inputs[6], inputs[7], op_name)?;
        let op = QBinary {
            a_dt: eight(inputs[0], "a")?,
            b_dt: eight(inputs[3], "b")?,
            y_dt,
            q: Params {
                a_scale: scale(model, inputs[1], &named("a_scale"))?,
                a_zero: zero(model, inputs[2], &named("a_zero_point"))?.0 as f32,
                b_scale: scale(model, inputs[4], &named("b_scale"))?,
                b_zero: zero(model, inputs[5], &named("b_zero_point"))?.0 as f32,
                y,
                mul: self.mul,
            },
            isa: Isa::detect(),
        };
        model.wire_node(prefix, op, &[inputs[0], inputs[3]])
    }
}

/// One finite positive per-tensor scale, a constant.
pub(crate) fn scale(model: &TypedModel, outlet: OutletId, what: &str) -> TractResult<f32> {
    let v = floats(konst(model, outlet, what)?.as_ref())?;
    ensure!(
        v.len() == 1 && v[0].is_finite() && v[0] > 0.0,
        "{what} must be one finite positive value, found {v:?}"
    );
    Ok(v[0])
}

/// A per-tensor zero point (a constant) and its type.
pub(crate) fn zero(
    model: &TypedModel,
    outlet: OutletId,
    what: &str,
) -> TractResult<(i32, DatumType)> {
    let t = konst(model, outlet, what)?;
    let v = ints(&t)?;
    ensure!(
        v.len() == 1,
        "{what} must be one value (per tensor), found {}",
        v.len()
    );
    Ok((v[0], t.datum_type().unquantized()))
}

/// The output's quantization (its scale and zero point, constants) and its 8-bit type.
pub(crate) fn output_quant(
    model: &TypedModel,
    scale_outlet: OutletId,
    zero_outlet: OutletId,
    op: &str,
) -> TractResult<(Quant, DatumType)> {
    let (z, dt) = zero(model, zero_outlet, &format!("{op}: y_zero_point"))?;
    let signed = match dt {
        DatumType::U8 => false,
        DatumType::I8 => true,
        dt => bail!("{op}: y_zero_point has type {dt:?}, not uint8 or int8"),
    };
    let y_scale = scale(model, scale_outlet, &format!("{op}: y_scale"))?;
    Ok((Quant::eight_bit(y_scale, z, signed), dt))
}

/// A per-tensor QuantizeLinear to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    pub scale: f32,
    pub zero: i32,
    /// The output range less the zero point: `qmin - zero`, `qmax - zero`.
    pub lo: f32,
    pub hi: f32,
}

impl Quant {
    /// Quantization to uint8 (`signed` false) or int8 with this scale and zero point.
    pub fn eight_bit(scale: f32, zero: i32, signed: bool) -> Quant {
        let (qmin, qmax) = if signed {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        Quant {
            scale,
            zero,
            lo: qmin - zero as f32,
            hi: qmax - zero as f32,
        }
    }

    /// `saturate(round_half_to_even(x / scale) + zero)`. (`min`/`max`, not `clamp`, so that a
    /// NaN gives what the AVX2 `vminps`/`vmaxps` give: the top of the range.)
    #[inline(always)]
    pub(crate) fn one<O: QuantOut>(&self, x: f32) -> O {
        O::from_i32((x / self.scale).min(self.hi).max(self.lo).round_ties_even() as i32 + self.zero)
    }
}

/// The same as [`Quant::one`] on eight values in AVX2 registers: divide, clamp, round half to
/// even (`vcvtps2dq` under the default rounding mode), add the zero point.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn quant8_avx2(
    q: &Quant,
    x: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let y = _mm256_div_ps(x, _mm256_set1_ps(q.scale));
    let y = _mm256_max_ps(_mm256_min_ps(y, _mm256_set1_ps(q.hi)), _mm256_set1_ps(q.lo));
    _mm256_add_epi32(_mm256_cvtps_epi32(y), _mm256_set1_epi32(q.zero))
}

/// The constants of one addition or multiplication.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub a_scale: f32,
    pub a_zero: f32,
    pub b_scale: f32,
    pub b_zero: f32,
    pub y: Quant,
    /// The dequantized values are multiplied, not added.
    pub mul: bool,
}

impl Params {
    /// One element, from `a - a_zero` and `b - b_zero`.
    #[inline(always)]
    fn one<O: QuantOut>(&self, a: f32, b: f32) -> O {
        let (x, y) = (a * self.a_scale, b * self.b_scale);
        self.y.one(if self.mul { x * y } else { x + y })
    }

    /// The same constants with the operands' roles swapped (both operations commute, bit for
    /// bit).
    fn swapped(&self) -> Params {
        Params {
            a_scale: self.b_scale,
            a_zero: self.b_zero,
            b_scale: self.a_scale,
            b_zero: self.a_zero,
            ..*self
        }
    }
}

/// `out[i] = q(a[i], b[i])` over equal-length slices.
pub fn add<A: PlaneIn, B: PlaneIn, O: QuantOut>(
    isa: Isa,
    q: &Params,
    a: &[A],
    b: &[B],
    out: &mut [O],
) {
    assert!(a.len() == out.len() && b.len() == out.len());
    match isa {
        Isa::Scalar | Isa::NeonDot => add_portable(q, a, b, out),
        // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx2Vnni => unsafe { add_avx2(q, a, b, out) },
    }
}

fn add_portable<A: PlaneIn, B: PlaneIn, O: QuantOut>(q: &Params, a: &[A], b: &[B], out: &mut [O]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = q.one(x.centred(q.a_zero), y.centred(q.b_zero));
    }
}

/// Sixteen elements per step in AVX2 registers: the portable loop's operations (multiply,
/// multiply, add or multiply, then [`quant8_avx2`]), then the tail in the portable loop.
///
/// # Safety
/// The CPU has AVX2; `out` is an 8-bit type (every [`QuantOut`] is).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_avx2<A: PlaneIn, B: PlaneIn, O: QuantOut>(
    q: &Params,
    a: &[A],
    b: &[B],
    out: &mut [O],
) {
    use std::arch::x86_64::*;
    debug_assert_eq!(std::mem::size_of::<O>(), 1);
    let n = out.len();
    let body = n - n % 16;
    let (sa, sb) = (_mm256_set1_ps(q.a_scale), _mm256_set1_ps(q.b_scale));
    let (mut fa, mut fb) = ([0f32; 16], [0f32; 16]);
    for i in (0..body).step_by(16) {
        for h in 0..2 {
            let r = i + 8 * h..i + 8 * h + 8;
            let (da, db) = (&mut fa[8 * h..8 * h + 8], &mut fb[8 * h..8 * h + 8]);
            A::centred8(
                a[r.clone()].try_into().expect("8"),
                q.a_zero,
                da.try_into().expect("8"),
            );
            B::centred8(
                b[r].try_into().expect("8"),
                q.b_zero,
                db.try_into().expect("8"),
            );
        }
        // SAFETY: fa/fb hold 16 floats; out[i..i + 16] is in bounds (i + 16 <= body <= n)
        // and one byte per element.
        unsafe {
            let half = |h: usize| {
                let va = _mm256_loadu_ps(fa.as_ptr().add(8 * h));
                let vb = _mm256_loadu_ps(fb.as_ptr().add(8 * h));
                let (x, y) = (_mm256_mul_ps(va, sa), _mm256_mul_ps(vb, sb));
                let v = if q.mul {
                    _mm256_mul_ps(x, y)
                } else {
                    _mm256_add_ps(x, y)
                };
                quant8_avx2(&q.y, v)
            };
            let bytes = crate::kernels::qgemm::narrow16_avx2(half(0), half(1), O::MIN < 0.0);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), bytes);
        }
    }
    add_portable(q, &a[body..], &b[body..], &mut out[body..]);
}

/// Where `small` broadcasts over `full` as one value per block of trailing elements (`small`'s
/// shape is `full`'s with its last dimensions 1, and `full` is the output's shape), the block
/// length.
fn per_block(full: &[usize], small: &[usize]) -> Option<usize> {
    if full.len() != small.len() {
        return None;
    }
    let k = small.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    (full[..k] == small[..k]).then(|| full[k..].iter().product())
}

/// [`add`] over `full` in blocks of `inner` elements, block `i` against `small[i]` repeated.
fn by_block<A: PlaneIn, B: PlaneIn, O: QuantOut>(
    isa: Isa,
    q: &Params,
    full: &[A],
    small: &[B],
    out: &mut [O],
    inner: usize,
) {
    if inner == 0 {
        return;
    }
    let mut repeated = Vec::with_capacity(inner);
    for ((x, o), &v) in full.chunks(inner).zip(out.chunks_mut(inner)).zip(small) {
        repeated.clear();
        repeated.resize(inner, v);
        add(isa, q, x, &repeated, o);
    }
}

/// The typed operator: two 8-bit tensors in, one out.
#[derive(Debug, Clone, PartialEq)]
pub struct QBinary {
    a_dt: DatumType,
    b_dt: DatumType,
    y_dt: DatumType,
    q: Params,
    isa: Isa,
}

// Compared as tract compares operators: finite floats, bit for bit.
impl Eq for QBinary {}

impl QBinary {
    fn eval_t<A: PlaneIn + Datum, B: PlaneIn + Datum, O: QuantOut + Datum>(
        &self,
        a: &Tensor,
        b: &Tensor,
    ) -> TractResult<Tensor> {
        let shape = multi_broadcast(&[a.shape(), b.shape()])?;
        // SAFETY: 8-bit integers have no invalid bit patterns, and both paths below write
        // every element.
        let mut t = unsafe { Tensor::uninitialized::<O>(&shape)? };
        {
            let mut ov = t.try_as_plain_ram_mut()?;
            let out = ov.as_slice_mut::<O>()?;
            let (av, bv) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
            let (xs, ys) = (av.as_slice::<A>()?, bv.as_slice::<B>()?);
            if a.shape() == b.shape() {
                add(self.isa, &self.q, xs, ys, out);
            } else if let Some(inner) = per_block(a.shape(), b.shape()) {
                // b holds one value per block of `inner` elements of a (a squeeze-excitation's
                // per-channel factor): the vector path, block by block.
                by_block(self.isa, &self.q, xs, ys, out, inner);
            } else if let Some(inner) = per_block(b.shape(), a.shape()) {
                by_block(self.isa, &self.q.swapped(), ys, xs, out, inner);
            } else {
                let (xa, xb) = (a.to_plain_array_view::<A>()?, b.to_plain_array_view::<B>()?);
                let (xa, xb) = (
                    xa.broadcast(&*shape).context("broadcasting a")?,
                    xb.broadcast(&*shape).context("broadcasting b")?,
                );
                for ((o, &x), &y) in out.iter_mut().zip(xa.iter()).zip(xb.iter()) {
                    *o = self
                        .q
                        .one(x.centred(self.q.a_zero), y.centred(self.q.b_zero));
                }
            }
        }
        Ok(t)
    }
}

impl Op for QBinary {
    fn name(&self) -> StaticName {
        if self.q.mul {
            "lookout.QMul"
        } else {
            "lookout.QAdd"
        }
        .into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} {} {:?} -> {:?} kernels: {}",
            self.a_dt,
            if self.q.mul { "*" } else { "+" },
            self.b_dt,
            self.y_dt,
            self.isa.vector_name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QBinary {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        use DatumType::{I8, U8};
        let (a, b) = (&inputs[0], &inputs[1]);
        let t = match (self.a_dt, self.b_dt, self.y_dt) {
            (U8, U8, U8) => self.eval_t::<u8, u8, u8>(a, b)?,
            (U8, U8, I8) => self.eval_t::<u8, u8, i8>(a, b)?,
            (U8, I8, U8) => self.eval_t::<u8, i8, u8>(a, b)?,
            (U8, I8, I8) => self.eval_t::<u8, i8, i8>(a, b)?,
            (I8, U8, U8) => self.eval_t::<i8, u8, u8>(a, b)?,
            (I8, U8, I8) => self.eval_t::<i8, u8, i8>(a, b)?,
            (I8, I8, U8) => self.eval_t::<i8, i8, u8>(a, b)?,
            (I8, I8, I8) => self.eval_t::<i8, i8, i8>(a, b)?,
            other => bail!("quantized {}: types {other:?}", self.name()),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for QBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = multi_broadcast(&[&*inputs[0].shape, &*inputs[1].shape])?;
        Ok(tvec!(self.y_dt.fact(&*shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(y_zero: i32, signed: bool) -> Params {
        let (qmin, qmax) = if signed {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        Params {
            a_scale: 0.031,
            a_zero: 7.0,
            b_scale: 0.0173,
            b_zero: -3.0,
            y: Quant {
                scale: 0.042,
                zero: y_zero,
                lo: qmin - y_zero as f32,
                hi: qmax - y_zero as f32,
            },
            mul: false,
        }
    }

    #[test]
    fn one_element_is_the_onnx_definition() {
        // The definition in f64 for values away from rounding ties, and the saturation.
        let q = params(12, false);
        for (a, b) in [
            (0u8, 0u8),
            (7, 3),
            (100, 200),
            (255, 255),
            (3, 250),
            (200, 0),
        ] {
            let exact = ((a as f64 - 7.0) * 0.031f32 as f64 + (b as f64 + 3.0) * 0.0173f32 as f64)
                / 0.042f32 as f64;
            let want = (exact.round_ties_even() + 12.0).clamp(0.0, 255.0) as u8;
            let got: u8 = q.one(a.centred(q.a_zero), (b as i8).centred(q.b_zero));
            // (b as i8 wraps above 127: use the u8 reading for those.)
            let got = if b > 127 {
                q.one(a.centred(q.a_zero), b.centred(q.b_zero))
            } else {
                got
            };
            assert_eq!(got, want, "a {a} b {b}: exact {exact}");
        }
        // The product, against the definition in f64 (away from ties).
        let m = Params {
            mul: true,
            ..params(12, false)
        };
        for (a, b) in [
            (0u8, 0u8),
            (7, 3),
            (100, 200),
            (255, 255),
            (3, 250),
            (200, 1),
        ] {
            let exact = ((a as f64 - 7.0) * 0.031f32 as f64)
                * ((b as f64 + 3.0) * 0.0173f32 as f64)
                / 0.042f32 as f64;
            let want = (exact.round_ties_even() + 12.0).clamp(0.0, 255.0) as u8;
            let got: u8 = m.one(a.centred(m.a_zero), b.centred(m.b_zero));
            assert_eq!(got, want, "a {a} b {b}: exact {exact}");
        }
        // Far outside the range: saturates at both ends.
        let mut tiny = params(0, true);
        tiny.y.scale = 1e-6;
        assert_eq!(tiny.one::<i8>(200.0, 0.0), 127);
        assert_eq!(tiny.one::<i8>(-200.0, 0.0), -128);
        let u = params(0, false);
        assert_eq!(u.one::<u8>(-100.0, -100.0), 0);
    }

    /// xorshift bytes, so the test needs no dependency.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn check_paths<
        A: PlaneIn + std::fmt::Debug,
        B: PlaneIn,
        O: QuantOut + PartialEq + std::fmt::Debug,
    >(
        a: &[A],
        b: &[B],
        q: &Params,
    ) {
        let mut want = vec![O::default(); a.len()];
        add_portable(q, a, b, &mut want);
        for isa in Isa::available() {
            let mut got = vec![O::default(); a.len()];
            add(isa, q, a, b, &mut got);
            assert_eq!(got, want, "{} length {}", isa.name(), a.len());
        }
    }

    #[test]
    fn every_path_gives_the_portable_bytes_for_every_type_and_tail() {
        for n in [0, 1, 15, 16, 17, 31, 64, 100, 1000] {
            let (ra, rb) = (bytes(n, 1 + n as u64), bytes(n, 77 + n as u64));
            let (sa, sb): (Vec<i8>, Vec<i8>) = (
                ra.iter().map(|&v| v as i8).collect(),
                rb.iter().map(|&v| v as i8).collect(),
            );
            for (zero, mul) in [(0, false), (128, false), (40, false), (0, true), (40, true)] {
                let qu = Params {
                    mul,
                    ..params(zero, false)
                };
                check_paths::<u8, u8, u8>(&ra, &rb, &qu);
                check_paths::<u8, i8, u8>(&ra, &sb, &qu);
                check_paths::<i8, u8, u8>(&sa, &rb, &qu);
                check_paths::<i8, i8, u8>(&sa, &sb, &qu);
                let qi = Params {
                    mul,
                    ..params(zero - 128, true)
                };
                check_paths::<u8, u8, i8>(&ra, &rb, &qi);
                check_paths::<i8, i8, i8>(&sa, &sb, &qi);
                check_paths::<u8, i8, i8>(&ra, &sb, &qi);
                check_paths::<i8, u8, i8>(&sa, &rb, &qi);
            }
        }
    }

    #[test]
    fn broadcast_inputs_match_the_same_inputs_expanded() {
        // One value per channel plane (the block path), on either side, and one per
        // spatial position (the portable loop over broadcast views); sums and products.
        let full = bytes(60, 3);
        let ctx = EvalContext::out_of_plan();
        let cases: [(&[usize], usize); 2] = [(&[1, 3, 1, 1], 3), (&[1, 1, 4, 5], 20)];
        for mul in [false, true] {
            let op = QBinary {
                a_dt: DatumType::U8,
                b_dt: DatumType::U8,
                y_dt: DatumType::U8,
                q: Params {
                    mul,
                    ..params(5, false)
                },
                isa: Isa::detect(),
            };
            for (shape, n) in cases {
                let small = bytes(n, 9);
                let expanded: Vec<u8> = (0..60)
                    .map(|i| if n == 3 { small[i / 20] } else { small[i % 20] })
                    .collect();
                let t = |v: &[u8], s: &[usize]| Tensor::from_shape(s, v).unwrap().into_tvalue();
                let big = [1, 3, 4, 5];
                for small_first in [false, true] {
                    let (got, want) = if small_first {
                        (
                            op.eval(&ctx, tvec!(t(&small, shape), t(&full, &big))),
                            op.eval(&ctx, tvec!(t(&expanded, &big), t(&full, &big))),
                        )
                    } else {
                        (
                            op.eval(&ctx, tvec!(t(&full, &big), t(&small, shape))),
                            op.eval(&ctx, tvec!(t(&full, &big), t(&expanded, &big))),
                        )
                    };
                    let (got, want) = (got.unwrap(), want.unwrap());
                    assert_eq!(got[0].shape(), &big);
                    assert_eq!(
                        got[0].to_plain_array_view::<u8>().unwrap(),
                        want[0].to_plain_array_view::<u8>().unwrap(),
                        "mul {mul} shape {shape:?} small first {small_first}"
                    );
                }
            }
        }
    }
}
