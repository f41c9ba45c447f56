//! Procedural conveyor-belt scenes: the pictures behind the `synthetic` frame
//! source and the training set of the bundled default model
//! (`models/default.onnx`, made by `models/train.py`, which compiles this very
//! file into a small dump tool).
//!
//! One call renders one frame: a textured belt (colour, brightness, ribs,
//! seams, blotches, optional side rails, debris), one machined part (a disc
//! or a rounded square plate, with or without holes; varying position, size
//! 35-60% of the shorter side, rotation, metal shade, lighting gradient,
//! highlight and shadow) and mild sensor noise, plus the defect of the
//! requested class from [`CLASSES`]: `scratch` (one to three thin bright or
//! dark lines across the part), `dent` (a shaded elliptical dimple: dark
//! crescent on the side facing the light, highlight opposite) or `missing`
//! (a round bite, a V-shaped wedge or a square slot gone from the rim, the
//! belt showing through). Every size is relative to the shorter side of the frame, so a
//! scene reads the same at 320x240 or 1280x720, and all randomness comes from
//! the caller's [`SceneRng`], so a seed reproduces a frame exactly on every
//! platform and crate version.
//!
//! This file only draws pixels. Choosing classes, pacing frames, timestamps,
//! resizing and normalising for the model, inference and scoring the
//! predictions are left to the frame source and the pipeline that use it.
//! It must stay free of dependencies other than `std` and `image`: the
//! training script includes it with `#[path]` into a scratch crate, so a
//! change to the drawing here means the default model should be retrained.
//! It stays one file, past the house limit of ~700 lines, for the same reason: the training
//! script includes exactly this file, and splitting it would need a module tree there too.

use image::RgbImage;

/// The classes a scene can show, in the order of the default model's logits.
pub const CLASSES: [&str; 4] = ["ok", "scratch", "dent", "missing"];

/// Deterministic PRNG (SplitMix64), hand-written so that a seed gives the same
/// scene on every platform and with every version of every crate.
#[derive(Debug, Clone)]
pub struct SceneRng {
    state: u64,
}

impl SceneRng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SceneRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (24 random bits).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }

    /// A random unit vector.
    fn unit(&mut self) -> (f32, f32) {
        let a = self.range(0.0, std::f32::consts::TAU);
        (a.cos(), a.sin())
    }
}

/// Renders one scene of class `class` (an index into [`CLASSES`]; values past
/// the end render an intact part) into `out`, whatever its size, drawing all
/// randomness from `rng`. Meant for frames of 32x32 and up (typically 320x240
/// or 640x480); smaller frames are drawn too, just without detail, and an
/// empty one is left alone.
pub fn render_into(class: usize, rng: &mut SceneRng, out: &mut RgbImage) {
    let (w, h) = out.dimensions();
    if w == 0 || h == 0 {
        return;
    }
    let scene = Scene::new(class, rng, w as f32, h as f32);
    scene.draw(out);
}

/// Renders one scene of class `class` into a new `width` x `height` image.
pub fn render(class: usize, rng: &mut SceneRng, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    render_into(class, rng, &mut out);
    out
}

// ---------------------------------------------------------------------------
// Scene description
// ---------------------------------------------------------------------------

/// Material removed from the part, in part-local coordinates.
#[derive(Clone, Copy)]
enum Cut {
    /// A round bite centred near the rim.
    Bite { x: f32, y: f32, r: f32 },
    /// A V-notch: inside both half-planes `n . (p - apex) <= 0`.
    Notch {
        ax: f32,
        ay: f32,
        n1: (f32, f32),
        n2: (f32, f32),
    },
    /// A square-bottomed slot cut in from the rim along `u`: everything with
    /// `u . p > depth` and `|v . p| < half` is gone (`v` is `u` turned 90 degrees).
    Slot {
        ux: f32,
        uy: f32,
        depth: f32,
        half: f32,
    },
}

impl Cut {
    /// Signed distance to the removed region (negative inside it).
    #[inline]
    fn sdf(&self, x: f32, y: f32) -> f32 {
        match *self {
            Cut::Bite { x: bx, y: by, r } => len(x - bx, y - by) - r,
            Cut::Notch { ax, ay, n1, n2 } => {
                let (dx, dy) = (x - ax, y - ay);
                (n1.0 * dx + n1.1 * dy).max(n2.0 * dx + n2.1 * dy)
            }
            Cut::Slot {
                ux,
                uy,
                depth,
                half,
            } => (depth - (ux * x + uy * y)).max((uy * x - ux * y).abs() - half),
        }
    }
}

/// The machined part: its outline is a signed distance field in pixels.
struct Part {
    cx: f32,
    cy: f32,
    cos: f32,
    sin: f32,
    plate: bool,
    /// Disc radius, or half the side of the plate.
    r: f32,
    /// Corner radius of the plate.
    corner: f32,
    /// Through holes: local x, local y, radius.
    holes: Vec<[f32; 3]>,
    cut: Option<Cut>,
}

impl Part {
    #[inline]
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        (
            dx * self.cos + dy * self.sin,
            -dx * self.sin + dy * self.cos,
        )
    }

    /// Local offset back to frame coordinates.
    fn global(&self, lx: f32, ly: f32) -> (f32, f32) {
        (
            self.cx + lx * self.cos - ly * self.sin,
            self.cy + lx * self.sin + ly * self.cos,
        )
    }

    #[inline]
    fn sdf_local(&self, x: f32, y: f32) -> f32 {
        let mut d = if self.plate {
            let k = self.r - self.corner;
            let qx = x.abs() - k;
            let qy = y.abs() - k;
            len(qx.max(0.0), qy.max(0.0)) + qx.max(qy).min(0.0) - self.corner
        } else {
            len(x, y) - self.r
        };
        for hole in &self.holes {
            d = d.max(hole[2] - len(x - hole[0], y - hole[1]));
        }
        if let Some(cut) = &self.cut {
            d = d.max(-cut.sdf(x, y));
        }
        d
    }

    /// Signed distance (pixels) from a frame point to the part's outline,
    /// negative on material.
    #[inline]
    fn sdf(&self, x: f32, y: f32) -> f32 {
        let (lx, ly) = self.local(x, y);
        self.sdf_local(lx, ly)
    }

    /// Distance from the centre to the outer outline along local unit `(ux, uy)`.
    fn rim(&self, ux: f32, uy: f32) -> f32 {
        if self.plate {
            (self.r / ux.abs().max(uy.abs()).max(0.5)).min(self.r * 1.3)
        } else {
            self.r
        }
    }

    /// Radius of a circle around the centre that holds the whole part.
    fn bound(&self) -> f32 {
        if self.plate {
            (self.r - self.corner) * std::f32::consts::SQRT_2 + self.corner
        } else {
            self.r
        }
    }
}

/// A round dot added to the luminance (specks on the part, debris on the belt).
struct Dot {
    x: f32,
    y: f32,
    r: f32,
    amp: f32,
}

struct Scratch {
    ax: f32,
    ay: f32,
    dx: f32,
    dy: f32,
    /// Squared length of `(dx, dy)`.
    len2: f32,
    hw: f32,
    amp: f32,
}

struct Dent {
    x: f32,
    y: f32,
    cos: f32,
    sin: f32,
    inv_a: f32,
    inv_b: f32,
    /// Light direction in the dent's axes.
    lu: f32,
    lv: f32,
    k: f32,
}

enum Defect {
    None,
    Scratches(Vec<Scratch>),
    Dent(Dent),
}

struct Scene {
    w: usize,
    h: usize,
    /// Belt runs along x (ribs vertical) when true.
    horizontal: bool,
    belt: [f32; 3],
    rib_period: f32,
    rib_amp: f32,
    rib_phase: f32,
    /// (position along the belt, half width, amplitude)
    seam: Option<(f32, f32, f32)>,
    blotch: Vec<f32>,
    blotch_nx: usize,
    blotch_ny: usize,
    /// Rail width across the belt (0: none) and shade.
    rail_w: f32,
    rail_shade: f32,
    debris: Vec<Dot>,

    part: Part,
    light: (f32, f32),
    metal: f32,
    tint: [f32; 3],
    grad: f32,
    ring_freq: f32,
    ring_amp: f32,
    ring_phase: f32,
    spec: (f32, f32, f32, f32), // x, y, 1/sigma^2, strength
    bevel: f32,
    bevel_k: f32,
    smudge: Option<Dot>,
    specks: Vec<Dot>,
    shadow_off: (f32, f32),
    shadow_soft: f32,
    shadow_k: f32,

    defect: Defect,

    gain: [f32; 3],
    vig: f32,
    vig_c: (f32, f32),
    noise: f32,
    noise_seed: u64,
}

#[inline]
fn len(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

#[inline]
fn clamp01(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

#[inline]
fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

impl Scene {
    fn new(class: usize, rng: &mut SceneRng, wf: f32, hf: f32) -> Scene {
        let s = wf.min(hf);

        // --- belt ---------------------------------------------------------
        let horizontal = rng.chance(0.75);
        let kind = rng.below(5);
        let belt = match kind {
            0 => {
                let g = rng.range(0.10, 0.28);
                [g, g, g * 1.03]
            }
            1 => [
                rng.range(0.10, 0.18),
                rng.range(0.22, 0.34),
                rng.range(0.13, 0.21),
            ],
            2 => [
                rng.range(0.09, 0.15),
                rng.range(0.15, 0.23),
                rng.range(0.26, 0.40),
            ],
            3 => {
                let g = rng.range(0.05, 0.10);
                [g, g, g]
            }
            _ => {
                let g = rng.range(0.24, 0.36);
                [g * 1.04, g, g * 0.92]
            }
        };
        // Parts are always lighter than the belt; on the lighter belts, clearly so.
        let pale_belt = kind == 4 || (kind == 0 && belt[0] > 0.2);
        let bright = rng.range(0.85, 1.15);
        let belt = belt.map(|c| c * bright);
        let rib_period = rng.range(0.015, 0.05) * s;
        let rib_amp = rng.range(0.0, 0.05);
        let rib_phase = rng.range(0.0, 1.0);
        let along = if horizontal { wf } else { hf };
        let across = if horizontal { hf } else { wf };
        let seam = if rng.chance(0.25) {
            let pos = rng.range(0.0, along);
            let hw = rng.range(0.002, 0.005) * s;
            let amp = rng.range(0.04, 0.10) * if rng.chance(0.5) { 1.0 } else { -1.0 };
            Some((pos, hw, amp))
        } else {
            None
        };
        let blotch_nx = 7;
        let blotch_ny = 6;
        let blotch_amp = rng.range(0.02, 0.08);
        let blotch = (0..(blotch_nx + 1) * (blotch_ny + 1))
            .map(|_| rng.range(-1.0, 1.0) * blotch_amp)
            .collect();
        let (rail_w, rail_shade) = if rng.chance(0.5) {
            (rng.range(0.03, 0.08) * s, rng.range(0.35, 0.6))
        } else {
            (0.0, 0.0)
        };
        let n_debris = rng.below(6);
        let debris = (0..n_debris)
            .map(|_| Dot {
                x: rng.range(0.0, wf),
                y: rng.range(0.0, hf),
                r: rng.range(0.003, 0.007) * s,
                amp: rng.range(0.05, 0.15) * if rng.chance(0.5) { 1.0 } else { -1.0 },
            })
            .collect();

        // --- part ---------------------------------------------------------
        let plate = rng.chance(0.4);
        let size = rng.range(0.35, 0.60) * s;
        let r = size * 0.5;
        let corner = if plate { rng.range(0.08, 0.3) * r } else { 0.0 };
        let angle = rng.range(0.0, std::f32::consts::TAU);
        let mut part = Part {
            cx: 0.0,
            cy: 0.0,
            cos: angle.cos(),
            sin: angle.sin(),
            plate,
            r,
            corner,
            holes: Vec::new(),
            cut: None,
        };
        let margin = 0.02 * s;
        let rb = part.bound() + margin;
        let place = |rng: &mut SceneRng, lo: f32, hi: f32| {
            if hi > lo {
                rng.range(lo, hi)
            } else {
                rng.next_f32(); // keep the draw count fixed
                0.5 * (lo + hi)
            }
        };
        let pa = place(rng, rb, along - rb);
        let pc = place(rng, rb + rail_w, across - rb - rail_w);
        if horizontal {
            part.cx = pa;
            part.cy = pc;
        } else {
            part.cx = pc;
            part.cy = pa;
        }
        if plate {
            if rng.chance(0.6) {
                let k = rng.range(0.6, 0.72) * r;
                let hr = rng.range(0.07, 0.11) * r;
                for (sx, sy) in [(1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)] {
                    part.holes.push([sx * k, sy * k, hr]);
                }
            }
            if rng.chance(0.5) {
                part.holes.push([0.0, 0.0, rng.range(0.12, 0.3) * r]);
            }
        } else {
            if rng.chance(0.7) {
                part.holes.push([0.0, 0.0, rng.range(0.1, 0.3) * r]);
            }
            if rng.chance(0.5) {
                let n = 3 + rng.below(4);
                let rr = rng.range(0.55, 0.72) * r;
                let hr = rng.range(0.06, 0.1) * r;
                let phase = rng.range(0.0, std::f32::consts::TAU);
                for i in 0..n {
                    let a = phase + i as f32 * std::f32::consts::TAU / n as f32;
                    part.holes.push([rr * a.cos(), rr * a.sin(), hr]);
                }
            }
        }

        let light = rng.unit();
        let metal = if pale_belt {
            rng.range(0.58, 0.85)
        } else {
            rng.range(0.45, 0.85)
        };
        let tint = if rng.chance(0.15) {
            [1.12, 0.98, 0.68]
        } else {
            [
                1.0 + rng.range(-0.04, 0.04),
                1.0,
                1.0 + rng.range(-0.02, 0.06),
            ]
        };
        let grad = rng.range(0.08, 0.3);
        let ring_freq = std::f32::consts::TAU / (rng.range(0.008, 0.03) * s).max(1.5);
        let ring_amp = rng.range(0.0, 0.02);
        let ring_phase = rng.range(0.0, std::f32::consts::TAU);
        let spec = {
            let d = rng.range(0.1, 0.5) * r;
            let sig = rng.range(0.3, 0.6) * r;
            (
                part.cx + light.0 * d,
                part.cy + light.1 * d,
                1.0 / (sig * sig).max(1e-3),
                rng.range(0.0, 0.22),
            )
        };
        let bevel = (rng.range(0.008, 0.016) * s).max(0.75);
        let bevel_k = rng.range(0.12, 0.3);
        let smudge = if rng.chance(0.3) {
            let (ux, uy) = rng.unit();
            let d = rng.range(0.0, 0.6) * r;
            Some(Dot {
                x: part.cx + ux * d,
                y: part.cy + uy * d,
                r: rng.range(0.15, 0.3) * r,
                amp: -rng.range(0.03, 0.08),
            })
        } else {
            None
        };
        let n_specks = rng.below(5);
        let specks = (0..n_specks)
            .map(|_| {
                let (ux, uy) = rng.unit();
                let d = rng.range(0.0, 0.9) * r;
                Dot {
                    x: part.cx + ux * d,
                    y: part.cy + uy * d,
                    r: rng.range(0.002, 0.005) * s,
                    amp: rng.range(0.08, 0.2) * if rng.chance(0.5) { 1.0 } else { -1.0 },
                }
            })
            .collect();
        let sd = rng.range(0.01, 0.035) * s;
        let shadow_off = (-light.0 * sd, -light.1 * sd);
        let shadow_soft = (rng.range(0.008, 0.025) * s).max(0.5);
        let shadow_k = rng.range(0.25, 0.55);

        // --- camera -------------------------------------------------------
        let g = rng.range(0.8, 1.2);
        let gain = [g * rng.range(0.93, 1.07), g, g * rng.range(0.93, 1.07)];
        let vig = rng.range(0.0, 0.35);
        let vig_c = (wf * rng.range(0.35, 0.65), hf * rng.range(0.35, 0.65));
        let noise = rng.range(0.006, 0.03);
        let noise_seed = rng.next_u64() | 1;

        // --- defect (drawn last so the rest of a seed's scene is shared) --
        let d = 2.0 * r;
        let mut defect = Defect::None;
        match class {
            1 => {
                let u = rng.next_f32();
                let n = if u < 0.55 {
                    1
                } else if u < 0.85 {
                    2
                } else {
                    3
                };
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let (ux, uy) = rng.unit();
                    let rho = rng.range(0.0, 0.55) * r;
                    let (mx, my) = (part.cx + ux * rho, part.cy + uy * rho);
                    let (tx, ty) = rng.unit();
                    let half = (rng.range(0.25, 0.45) * d).max(0.12 * s);
                    let hw = rng.range(0.007, 0.011) * s;
                    // Bright (fresh metal) or dark (groove), mostly whichever
                    // stands out on this shade.
                    let amp = if rng.chance(if metal > 0.62 { 0.25 } else { 0.75 }) {
                        rng.range(0.3, 0.5)
                    } else {
                        -rng.range(0.28, 0.45)
                    };
                    // Lines thinner than a pixel are drawn a pixel wide, fainter.
                    let hw_eff = hw.max(0.7);
                    v.push(Scratch {
                        ax: mx - tx * half,
                        ay: my - ty * half,
                        dx: 2.0 * tx * half,
                        dy: 2.0 * ty * half,
                        len2: (4.0 * half * half).max(1e-6),
                        hw: hw_eff,
                        amp: amp * hw / hw_eff,
                    });
                }
                defect = Defect::Scratches(v);
            }
            2 => {
                let a = (rng.range(0.1, 0.14) * d).max(0.045 * s);
                let b = a * rng.range(0.7, 1.0);
                let psi = rng.range(0.0, std::f32::consts::PI);
                let k = rng.range(0.75, 1.15);
                // Somewhere on solid material, clear of holes and the rim:
                // the first good candidate, else the deepest of twelve.
                let (mut x, mut y) = (part.cx, part.cy);
                let mut best = f32::INFINITY;
                for _ in 0..12 {
                    let (ux, uy) = rng.unit();
                    let rho = rng.range(0.0, 0.65) * part.rim(ux, uy);
                    let sd = part.sdf_local(ux * rho, uy * rho);
                    if sd < best {
                        best = sd;
                        (x, y) = part.global(ux * rho, uy * rho);
                    }
                    if sd < -(a + 0.01 * s) {
                        break;
                    }
                }
                let (c, sn) = (psi.cos(), psi.sin());
                defect = Defect::Dent(Dent {
                    x,
                    y,
                    cos: c,
                    sin: sn,
                    inv_a: 1.0 / a.max(0.5),
                    inv_b: 1.0 / b.max(0.5),
                    lu: light.0 * c + light.1 * sn,
                    lv: -light.0 * sn + light.1 * c,
                    k,
                });
            }
            3 => {
                let (ux, uy) = rng.unit();
                let e = part.rim(ux, uy);
                let cut = match rng.below(3) {
                    0 => {
                        let t = e * rng.range(0.92, 1.05);
                        Cut::Bite {
                            x: ux * t,
                            y: uy * t,
                            r: rng.range(0.26, 0.4) * r,
                        }
                    }
                    1 => {
                        let t = e * rng.range(0.3, 0.55);
                        let al = rng.range(0.35, 0.6);
                        let phi = uy.atan2(ux);
                        Cut::Notch {
                            ax: ux * t,
                            ay: uy * t,
                            n1: (-(phi + al).sin(), (phi + al).cos()),
                            n2: ((phi - al).sin(), -(phi - al).cos()),
                        }
                    }
                    _ => Cut::Slot {
                        ux,
                        uy,
                        depth: e * rng.range(0.5, 0.72),
                        half: rng.range(0.16, 0.28) * r,
                    },
                };
                part.cut = Some(cut);
            }
            _ => {}
        }

        Scene {
            w: wf as usize,
            h: hf as usize,
            horizontal,
            belt,
            rib_period,
            rib_amp,
            rib_phase,
            seam,
            blotch,
            blotch_nx,
            blotch_ny,
            rail_w,
            rail_shade,
            debris,
            part,
            light,
            metal,
            tint,
            grad,
            ring_freq,
            ring_amp,
            ring_phase,
            spec,
            bevel,
            bevel_k,
            smudge,
            specks,
            shadow_off,
            shadow_soft,
            shadow_k,
            defect,
            gain,
            vig,
            vig_c,
            noise,
            noise_seed,
        }
    }

    /// Belt luminance factor from ribs and seam at a coordinate along the belt.
    fn along_profile(&self, t: f32) -> f32 {
        let mut v = 1.0;
        let ph = (t / self.rib_period.max(1e-3) + self.rib_phase).fract();
        v += self.rib_amp * ((ph - 0.5).abs() * 4.0 - 1.0);
        if let Some((pos, hw, amp)) = self.seam {
            let d = (t - pos).abs();
            let hw = hw.max(0.6);
            if d < hw {
                v += amp * (1.0 - d / hw);
            }
        }
        v
    }

    /// Luminance offset of the metal at a pixel (everything but colour).
    #[inline]
    fn metal_at(&self, x: f32, y: f32, dist: f32) -> f32 {
        let p = &self.part;
        let (dx, dy) = (x - p.cx, y - p.cy);
        let proj = ((dx * self.light.0 + dy * self.light.1) / p.r.max(1e-3)).clamp(-1.5, 1.5);
        let mut m = self.metal * (1.0 + self.grad * proj);
        // Machining marks: rings on a disc, brushing on a plate.
        let (lx, ly) = p.local(x, y);
        let t = if p.plate { lx } else { len(lx, ly) };
        m += self.ring_amp * (t * self.ring_freq + self.ring_phase).sin();
        // Soft highlight.
        let (sx, sy, inv_s2, ks) = self.spec;
        let q = 1.0 - ((x - sx) * (x - sx) + (y - sy) * (y - sy)) * inv_s2;
        if q > 0.0 {
            m += ks * q * q;
        }
        // Bevel along every edge (outline, holes, breaks): lit on the side
        // facing the light, a little darker overall.
        if dist > -self.bevel {
            let e = 0.75;
            let gx = p.sdf(x + e, y) - p.sdf(x - e, y);
            let gy = p.sdf(x, y + e) - p.sdf(x, y - e);
            let gl = len(gx, gy);
            if gl > 1e-6 {
                let nl = (gx * self.light.0 + gy * self.light.1) / gl;
                let t = 1.0 - (-dist / self.bevel).clamp(0.0, 1.0);
                m += t * (self.bevel_k * nl - 0.06);
            }
        }
        if let Some(sm) = &self.smudge {
            m += dot_value(sm, x, y) * 1.0;
        }
        for sp in &self.specks {
            m += dot_value(sp, x, y);
        }
        match &self.defect {
            Defect::None => {}
            Defect::Scratches(v) => {
                for sc in v {
                    let (px, py) = (x - sc.ax, y - sc.ay);
                    let u = ((px * sc.dx + py * sc.dy) / sc.len2).clamp(0.0, 1.0);
                    let (ex, ey) = (px - u * sc.dx, py - u * sc.dy);
                    let dd = len(ex, ey);
                    if dd < sc.hw {
                        let fade = (u.min(1.0 - u) * 8.0).min(1.0);
                        m += sc.amp * smooth(1.0 - dd / sc.hw) * fade;
                    }
                }
            }
            Defect::Dent(dn) => {
                let (px, py) = (x - dn.x, y - dn.y);
                let u = (px * dn.cos + py * dn.sin) * dn.inv_a;
                let v = (-px * dn.sin + py * dn.cos) * dn.inv_b;
                let r2 = u * u + v * v;
                if r2 < 1.0 {
                    let w = 1.0 - r2;
                    // Slope of a (1 - r^2)^2 dimple lit from `light`: the wall
                    // nearer the light faces away from it.
                    m += -dn.k * 1.6 * w * (u * dn.lu + v * dn.lv) - 0.08 * w * w;
                }
            }
        }
        m
    }

    fn draw(&self, out: &mut RgbImage) {
        let (w, h) = (self.w, self.h);
        let buf: &mut [u8] = out;
        if buf.len() < w * h * 3 || w == 0 {
            return;
        }
        let (wf, hf) = (w as f32, h as f32);

        // Per-column / per-row tables for the belt.
        let along_tab: Vec<f32> = (0..if self.horizontal { w } else { h })
            .map(|i| self.along_profile(i as f32 + 0.5))
            .collect();
        let cell = |n: usize, i: usize, size: f32| {
            let t = (i as f32 + 0.5) / size * n as f32;
            let k = (t as usize).min(n - 1);
            (k, smooth((t - k as f32).clamp(0.0, 1.0)))
        };
        let bx: Vec<(usize, f32)> = (0..w).map(|i| cell(self.blotch_nx, i, wf)).collect();
        let by: Vec<(usize, f32)> = (0..h).map(|i| cell(self.blotch_ny, i, hf)).collect();
        let stride = self.blotch_nx + 1;

        let p = &self.part;
        let reach =
            p.bound() + len(self.shadow_off.0, self.shadow_off.1) + 2.0 * self.shadow_soft + 2.0;
        let reach2 = reach * reach;
        let vig_n = 1.0 / (0.25 * (wf * wf + hf * hf)).max(1.0);
        let noise_l = self.noise / 0.408;
        let noise_c = self.noise * 0.35;
        let mut ns = self.noise_seed;

        for (yi, row) in buf.chunks_exact_mut(w * 3).take(h).enumerate() {
            let y = yi as f32 + 0.5;
            let (ky, fy) = by[yi];
            let across_y = if self.horizontal { y.min(hf - y) } else { 0.0 };
            for (xi, px) in row.chunks_exact_mut(3).enumerate() {
                let x = xi as f32 + 0.5;
                // Belt.
                let (kx, fx) = bx[xi];
                let i0 = ky * stride + kx;
                let b0 = self.blotch[i0] + (self.blotch[i0 + 1] - self.blotch[i0]) * fx;
                let b1 = self.blotch[i0 + stride]
                    + (self.blotch[i0 + stride + 1] - self.blotch[i0 + stride]) * fx;
                let mut lum =
                    (along_tab[if self.horizontal { xi } else { yi }]) + b0 + (b1 - b0) * fy;
                for d in &self.debris {
                    lum += dot_value(d, x, y);
                }
                let mut col = [self.belt[0] * lum, self.belt[1] * lum, self.belt[2] * lum];
                if self.rail_w > 0.0 {
                    let a = if self.horizontal {
                        across_y
                    } else {
                        x.min(wf - x)
                    };
                    if a < self.rail_w {
                        let t = a / self.rail_w;
                        let g = self.rail_shade * (0.8 + 0.4 * (1.0 - (2.0 * t - 1.0).abs()));
                        col = [g, g, g * 1.02];
                    }
                }

                // Part and its shadow.
                let (dx, dy) = (x - p.cx, y - p.cy);
                if dx * dx + dy * dy < reach2 {
                    let ds = p.sdf(x - self.shadow_off.0, y - self.shadow_off.1);
                    let sh = clamp01(0.5 - ds / (2.0 * self.shadow_soft));
                    let f = 1.0 - self.shadow_k * sh;
                    col = col.map(|c| c * f);
                    let dist = p.sdf(x, y);
                    let cov = clamp01(0.5 - dist);
                    if cov > 0.0 {
                        let m = self.metal_at(x, y, dist);
                        for (v, t) in col.iter_mut().zip(self.tint) {
                            *v += (m * t - *v) * cov;
                        }
                    }
                }

                // Camera: vignette, white balance, noise.
                let (vx, vy) = (x - self.vig_c.0, y - self.vig_c.1);
                let v = 1.0 - self.vig * (vx * vx + vy * vy) * vig_n;
                ns ^= ns << 13;
                ns ^= ns >> 7;
                ns ^= ns << 17;
                let nl = (((ns & 0xffff) + ((ns >> 16) & 0xffff)) as f32 * (1.0 / 65535.0) - 1.0)
                    * noise_l;
                let ncr = (((ns >> 32) & 0xffff) as f32 * (1.0 / 65535.0) - 0.5) * noise_c;
                let ncb = ((ns >> 48) as f32 * (1.0 / 65535.0) - 0.5) * noise_c;
                let n = [nl + ncr, nl, nl + ncb];
                for c in 0..3 {
                    let val = col[c] * self.gain[c] * v + n[c];
                    px[c] = (val * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
}

/// Luminance a dot adds at a pixel (a cone, anti-aliased to at least a pixel).
#[inline]
fn dot_value(d: &Dot, x: f32, y: f32) -> f32 {
    let r = d.r.max(0.7);
    let (dx, dy) = (x - d.x, y - d.y);
    let q = dx * dx + dy * dy;
    if q >= r * r {
        return 0.0;
    }
    d.amp * (d.r / r) * (1.0 - q.sqrt() / r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_pixels() {
        for class in 0..CLASSES.len() {
            let a = render(class, &mut SceneRng::new(42 + class as u64), 320, 240);
            let b = render(class, &mut SceneRng::new(42 + class as u64), 320, 240);
            assert_eq!(a.as_raw(), b.as_raw(), "class {class}");
        }
        let c = render(0, &mut SceneRng::new(43), 320, 240);
        let d = render(0, &mut SceneRng::new(44), 320, 240);
        assert_ne!(c.as_raw(), d.as_raw());
    }

    #[test]
    fn render_into_matches_render() {
        let a = render(2, &mut SceneRng::new(7), 160, 120);
        let mut b = RgbImage::new(160, 120);
        render_into(2, &mut SceneRng::new(7), &mut b);
        assert_eq!(a.as_raw(), b.as_raw());
    }

    #[test]
    fn classes_differ() {
        for seed in 0..20u64 {
            let imgs: Vec<RgbImage> = (0..CLASSES.len())
                .map(|c| render(c, &mut SceneRng::new(seed), 320, 240))
                .collect();
            for i in 0..imgs.len() {
                for j in i + 1..imgs.len() {
                    let diff = imgs[i]
                        .as_raw()
                        .iter()
                        .zip(imgs[j].as_raw())
                        .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 20)
                        .count();
                    // A defect changes a clear patch of pixels, not one or two.
                    assert!(
                        diff > 30,
                        "seed {seed}: classes {i} and {j} differ in {diff} values"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_sizes_do_not_panic() {
        let mut rng = SceneRng::new(1);
        for &(w, h) in &[
            (32, 32),
            (33, 97),
            (97, 33),
            (1280, 720),
            (1, 1),
            (0, 5),
            (5, 0),
            (2, 300),
        ] {
            for class in 0..CLASSES.len() + 1 {
                let img = render(class, &mut rng, w, h);
                assert_eq!(img.dimensions(), (w, h));
            }
        }
    }

    #[test]
    fn scene_is_not_flat() {
        // The part stands out from the belt: a wide spread of values.
        for seed in 0..10u64 {
            let img = render(0, &mut SceneRng::new(seed), 320, 240);
            let raw = img.as_raw();
            let lo = raw.iter().copied().min().unwrap_or(0);
            let hi = raw.iter().copied().max().unwrap_or(0);
            assert!(hi as i32 - lo as i32 > 60, "seed {seed}: {lo}..{hi}");
        }
    }

    #[test]
    fn rng_ranges() {
        let mut rng = SceneRng::new(9);
        for _ in 0..10_000 {
            let f = rng.next_f32();
            assert!((0.0..1.0).contains(&f));
            let r = rng.range(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&r));
            assert!(rng.below(7) < 7);
        }
        assert_eq!(rng.below(0), 0);
        // SplitMix64 reference value for seed 0.
        assert_eq!(SceneRng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }
}
