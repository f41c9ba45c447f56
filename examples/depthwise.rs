//! The two depthwise kernels side by side on MobileNetV2's 17 depthwise layer shapes (3x3,
//! pad 1): channel by channel ([`lookout_engine::kernels::depthwise::plane`]) and eight
//! channels at a time ([`lookout_engine::kernels::depthwise8::block8`], x86-64 with AVX2 +
//! FMA). Five rounds, the kernels taking turns, best p50 of each, so that the ratios hold
//! while this shared VM's speed changes. What the engine's depthwise operator
//! (`crates/engine/src/ops/depthwise.rs`) rests on when it gives every whole block of eight
//! channels to the second (`docs/engine.md`).
//!
//!     cargo run --example depthwise            # float
//!     cargo run --example depthwise -- int8    # uint8 in and out

#[cfg(target_arch = "x86_64")]
fn main() {
    use lookout_engine::kernels::depthwise::{self, Finish, Geometry};
    use lookout_engine::kernels::depthwise8::{block8, Finish8, BLOCK};
    use lookout_engine::Isa;
    use std::time::Instant;

    if Isa::detect() != Isa::Avx2Fma {
        eprintln!("this CPU has no AVX2 + FMA: only the plane kernel runs here");
        return;
    }
    let int8 = std::env::args().nth(1).as_deref() == Some("int8");
    // (channels, input size, stride, layers of this shape in MobileNetV2)
    let shapes = [
        (32, 112, 1, 1),
        (96, 112, 2, 1),
        (144, 56, 1, 1),
        (144, 56, 2, 1),
        (192, 28, 1, 2),
        (192, 28, 2, 1),
        (384, 14, 1, 4),
        (576, 14, 1, 2),
        (576, 14, 2, 1),
        (960, 7, 1, 3),
    ];
    let (mut total_plane, mut total_block) = (0.0, 0.0);
    println!("{}: p50 ms per layer", if int8 { "uint8" } else { "float" });
    for (c, h, s, layers) in shapes {
        let o = (h + 2 - 3) / s + 1;
        let g = Geometry {
            h,
            w: h,
            kh: 3,
            kw: 3,
            stride_h: s,
            stride_w: s,
            dil_h: 1,
            dil_w: 1,
            pad_top: 1,
            pad_left: 1,
            oh: o,
            ow: o,
        };
        let (hw, ohw) = (h * h, o * o);
        let x: Vec<f32> = (0..c * hw)
            .map(|i| (i * 7919 % 1000) as f32 / 1000.0)
            .collect();
        let xq: Vec<u8> = x.iter().map(|v| (v * 255.0) as u8).collect();
        let taps: Vec<f32> = (0..9 * c).map(|i| (i % 9) as f32 * 0.1 - 0.4).collect();
        let bias = vec![0.1f32; c];
        let multipliers = vec![0.01f32; c];
        let mut out = vec![0f32; c * ohw];
        let mut outq = vec![0u8; c * ohw];
        let mut run = |blocked: bool| {
            for k in 0..if blocked { c / BLOCK } else { c } {
                let n = if blocked { BLOCK } else { 1 };
                let (ch, ins, outs) = (
                    k * n,
                    k * n * hw..(k + 1) * n * hw,
                    k * n * ohw..(k + 1) * n * ohw,
                );
                let (t, b) = (&taps[ch * 9..(ch + n) * 9], &bias[ch..ch + n]);
                match (blocked, int8) {
                    // SAFETY: block8 needs AVX2 and FMA, checked before this loop runs, and
                    // slices of one block of channels, which `ins`, `outs`, `t` and `b` are.
                    (true, true) => unsafe {
                        block8::<u8, u8>(
                            &g,
                            &xq[ins],
                            3.0,
                            t,
                            b,
                            Finish8::Quant {
                                out: &mut outq[outs],
                                multipliers: &multipliers[ch..ch + n],
                                zero: 3,
                                lo: -3.0,
                                hi: 252.0,
                            },
                        )
                    },
                    // SAFETY: the same CPU check and block-sized slices as the arm above.
                    (true, false) => unsafe {
                        block8::<f32, u8>(
                            &g,
                            &x[ins],
                            0.0,
                            t,
                            b,
                            Finish8::Float {
                                out: &mut out[outs],
                                min: 0.0,
                                max: 6.0,
                            },
                        )
                    },
                    (false, true) => depthwise::plane::<u8, u8>(
                        Isa::Avx2Fma,
                        &g,
                        &xq[ins],
                        3.0,
                        t,
                        b[0],
                        Finish::Quant {
                            out: &mut outq[outs],
                            multiplier: 0.01,
                            zero: 3,
                            lo: -3.0,
                            hi: 252.0,
                        },
                    ),
                    (false, false) => depthwise::plane::<f32, u8>(
                        Isa::Avx2Fma,
                        &g,
                        &x[ins],
                        0.0,
                        t,
                        b[0],
                        Finish::Float {
                            out: &mut out[outs],
                            min: 0.0,
                            max: 6.0,
                        },
                    ),
                }
            }
        };
        let mut best = [f64::MAX; 2];
        for _round in 0..5 {
            for (k, blocked) in [false, true].into_iter().enumerate() {
                for _ in 0..3 {
                    run(blocked);
                }
                let mut times: Vec<f64> = (0..40)
                    .map(|_| {
                        let t = Instant::now();
                        run(blocked);
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                best[k] = best[k].min(times[times.len() / 2]);
            }
        }
        total_plane += best[0] * layers as f64;
        total_block += best[1] * layers as f64;
        println!(
            "  {c:4} x {h:3}x{h:<3} stride {s} (x{layers}): plane {:.4}  8 channels {:.4}  ratio {:.2}",
            best[0],
            best[1],
            best[1] / best[0]
        );
    }
    println!("  all 17 layers: plane {total_plane:.3}  8 channels {total_block:.3}");
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("the eight-channel kernel is x86-64 only");
}
