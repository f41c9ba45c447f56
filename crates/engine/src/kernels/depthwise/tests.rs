//! The plane kernel against the convolution's definition (in f64) for float and every 8-bit
//! type combination, strides, dilations, pads and plane sizes on every [`Isa`] this CPU runs.
//! [`geometry`] is shared with `depthwise8`'s tests, which check that kernel against this one.

use super::*;

/// Direct definition of the convolution, in f64, for comparison.
fn reference(g: &Geometry, x: &[f32], taps: &[f32], bias: f32) -> Vec<f64> {
    let mut out = vec![0f64; g.oh * g.ow];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let mut a = bias as f64;
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let y = (oy * g.stride_h + i * g.dil_h) as isize - g.pad_top as isize;
                    let xx = (ox * g.stride_w + j * g.dil_w) as isize - g.pad_left as isize;
                    if y >= 0 && xx >= 0 && (y as usize) < g.h && (xx as usize) < g.w {
                        a += taps[i * g.kw + j] as f64 * x[y as usize * g.w + xx as usize] as f64;
                    }
                }
            }
            out[oy * g.ow + ox] = a;
        }
    }
    out
}

/// A square kernel `k`, stride `s`, dilation `d` and padding `p` on every side over an
/// `h` x `w` plane.
pub(crate) fn geometry(h: usize, w: usize, k: usize, s: usize, d: usize, p: usize) -> Geometry {
    Geometry {
        h,
        w,
        kh: k,
        kw: k,
        stride_h: s,
        stride_w: s,
        dil_h: d,
        dil_w: d,
        pad_top: p,
        pad_left: p,
        oh: Geometry::output_len(h, k, s, d, 2 * p).unwrap(),
        ow: Geometry::output_len(w, k, s, d, 2 * p).unwrap(),
    }
}

#[test]
fn float_kernel_matches_definition_for_strides_dilations_and_pads() {
    for isa in Isa::available() {
        for (h, w, k, s, d, p) in [
            (7, 7, 3, 1, 1, 1),
            (8, 9, 3, 2, 1, 1),
            (13, 11, 5, 2, 1, 2),
            (10, 10, 3, 1, 2, 2),
            (5, 6, 3, 3, 1, 0),
            (1, 1, 3, 1, 1, 1),
            (112, 112, 3, 2, 1, 1),
        ] {
            let g = geometry(h, w, k, s, d, p);
            let x: Vec<f32> = (0..h * w)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let taps: Vec<f32> = (0..k * k).map(|i| (i as f32 - 4.0) / 3.0).collect();
            let mut out = vec![0f32; g.oh * g.ow];
            plane::<f32, u8>(
                isa,
                &g,
                &x,
                0.0,
                &taps,
                0.25,
                Finish::Float {
                    out: &mut out,
                    min: f32::MIN,
                    max: f32::MAX,
                },
            );
            let want = reference(&g, &x, &taps, 0.25);
            for (o, r) in out.iter().zip(&want) {
                assert!((*o as f64 - r).abs() < 1e-4, "{isa:?} {g:?}: {o} vs {r}");
            }
        }
    }
}

/// The quantized path on `x` (u8 or i8 plane values): exact integer sums, requantized as
/// the definition says, into u8 and i8 outputs.
fn check_quantized<I: PlaneIn + Into<f32>>(isa: Isa, g: &Geometry, xq: &[I], x_zero: f32) {
    let k = g.kh * g.kw;
    let wq: Vec<i8> = [-128i8, 127, 3, -7, 0, 55, -90, 12, 101]
        .iter()
        .cycle()
        .take(k)
        .copied()
        .collect();
    let taps: Vec<f32> = wq.iter().map(|&v| v as f32 - 1.0).collect(); // w_zero = 1
    let bias = -3071.0;
    let m = 0.0123;
    let xc: Vec<f32> = xq.iter().map(|&v| v.into() - x_zero).collect();
    let acc = reference(g, &xc, &taps, bias);
    let want = |a: f64, zero: f32, qmin: f32, qmax: f32| {
        assert_eq!(a.fract(), 0.0);
        ((a as f32 * m).round_ties_even() + zero).clamp(qmin, qmax)
    };
    let mut out = vec![0u8; g.oh * g.ow];
    let finish = Finish::Quant {
        out: &mut out,
        multiplier: m,
        zero: 9,
        lo: -9.0,
        hi: 246.0,
    };
    plane(isa, g, xq, x_zero, &taps, bias, finish);
    for (i, (o, a)) in out.iter().zip(&acc).enumerate() {
        let w = want(*a, 9.0, 0.0, 255.0);
        assert_eq!(*o as f32, w, "{isa:?} {g:?}: output {i}, acc {a}");
    }
    let mut out = vec![0i8; g.oh * g.ow];
    let finish = Finish::Quant {
        out: &mut out,
        multiplier: m,
        zero: -5,
        lo: -123.0,
        hi: 132.0,
    };
    plane(isa, g, xq, x_zero, &taps, bias, finish);
    for (i, (o, a)) in out.iter().zip(&acc).enumerate() {
        let w = want(*a, -5.0, -128.0, 127.0);
        assert_eq!(*o as f32, w, "{isa:?} {g:?}: output {i}, acc {a}");
    }
}

#[test]
fn quantized_kernel_is_exact_integer_arithmetic_then_requantizes() {
    // Planes narrower and wider than a chunk (7x7: 4 chunks across 7 rows), strides 1 to 3
    // (stride 2 fills both column phases in one pass, 16 values at a time), dilation, a
    // 5x5 kernel, no padding; u8 and i8 values in, u8 and i8 out.
    for isa in Isa::available() {
        for g in [
            geometry(9, 10, 3, 2, 1, 1),
            geometry(5, 37, 3, 1, 1, 1),
            geometry(7, 7, 3, 1, 1, 1),
            geometry(14, 14, 3, 2, 1, 1),
            geometry(14, 14, 3, 1, 1, 1),
            geometry(112, 112, 3, 2, 1, 1),
            geometry(33, 35, 3, 2, 1, 1),
            geometry(10, 10, 3, 1, 2, 2),
            geometry(13, 11, 5, 2, 1, 2),
            geometry(5, 6, 3, 3, 1, 0),
            geometry(1, 1, 3, 1, 1, 1),
            // Stride 2 without padding (even and odd widths), and TensorFlow's "SAME"
            // padding (none at the top and left, one at the bottom and right).
            geometry(10, 10, 3, 2, 1, 0),
            geometry(11, 11, 3, 2, 1, 0),
            Geometry {
                pad_top: 0,
                pad_left: 0,
                oh: 56,
                ow: 56,
                ..geometry(112, 112, 3, 2, 1, 1)
            },
        ] {
            let n = g.h * g.w;
            let xu: Vec<u8> = (0..n).map(|i| (i * 53 % 256) as u8).collect();
            check_quantized(isa, &g, &xu, 117.0);
            let xs: Vec<i8> = xu.iter().map(|&v| v as i8).collect();
            check_quantized(isa, &g, &xs, -3.0);
        }
    }
}
