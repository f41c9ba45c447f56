//! Where the time of a JPEG frame's decode goes: libjpeg-turbo (as `frame::decode_jpeg` runs
//! it) on `bench`'s rendered 640x480 and 1280x720 frames at quality 90, at full size and at
//! each reduced DCT scale, next to zune-jpeg (the `image` crate's decoder). At 1/8 scale the
//! inverse DCT keeps one coefficient per block and 1/64 of the pixels are made: what is left
//! is the entropy (Huffman) decoding of every coefficient, which every decode of the frame
//! does, whatever its output size (`bench` reports it as the decode floor). "raw YCbCr"
//! stops before chroma upsampling and colour conversion (full size: the mozjpeg crate's raw
//! reader takes no scaling), to show what a planar-YCbCr path could save. The variants take
//! turns, five rounds, best p50 of each.
//!
//!     cargo run --example jpeg

use std::time::Instant;

use lookout::source::scene::{self, SceneRng};

fn frame(w: u32, h: u32) -> Vec<u8> {
    let mut rng = SceneRng::new(7);
    let class = rng.below(scene::CLASSES.len());
    let img = scene::render(class, &mut rng, w, h);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("in-memory encode");
    out
}

/// Decodes to RGB at `eighths`/8 scale; returns the decoded size.
fn decode(data: &[u8], eighths: u8, buf: &mut Vec<u8>) -> (usize, usize) {
    let mut d = mozjpeg::Decompress::new_mem(data).expect("header");
    if eighths < 8 {
        d.scale(eighths);
    }
    let mut s = d.rgb().expect("start");
    let (w, h) = (s.width(), s.height());
    buf.resize(w * h * 3, 0);
    s.read_scanlines_into(buf.as_mut_slice()).expect("decode");
    s.finish().expect("finish");
    (w, h)
}

/// Decodes to planar YCbCr at full size, each plane at its own resolution (no chroma
/// upsampling, no colour conversion); returns the luma plane's size.
fn decode_raw(data: &[u8], planes: &mut [Vec<u8>; 3]) -> (usize, usize) {
    let d = mozjpeg::Decompress::new_mem(data).expect("header");
    let mut s = d.raw().expect("start");
    let (w, h) = (s.width(), s.height());
    for p in planes.iter_mut() {
        p.clear();
    }
    let [a, b, c] = planes;
    s.read_raw_data(&mut [a, b, c]);
    s.finish().expect("finish");
    (w, h)
}

/// zune-jpeg through the `image` crate (full size only: it has no DCT scaling).
fn decode_zune(data: &[u8]) -> (usize, usize) {
    let img = image::load_from_memory_with_format(data, image::ImageFormat::Jpeg).expect("zune");
    (img.width() as usize, img.height() as usize)
}

#[derive(Clone, Copy)]
enum Variant {
    /// libjpeg-turbo to RGB at this many eighths of full size.
    Rgb(u8),
    /// libjpeg-turbo to planar YCbCr, full size.
    Raw,
    /// zune-jpeg, full size.
    Zune,
}

fn main() {
    let variants: [(&str, Variant); 6] = [
        ("full", Variant::Rgb(8)),
        ("zune-jpeg", Variant::Zune),
        ("raw YCbCr", Variant::Raw),
        ("1/2", Variant::Rgb(4)),
        ("1/4", Variant::Rgb(2)),
        ("1/8", Variant::Rgb(1)),
    ];
    for (w, h) in [(640u32, 480u32), (1280, 720)] {
        let data = frame(w, h);
        let mut buf = Vec::new();
        let mut planes: [Vec<u8>; 3] = Default::default();
        let mut best = [f64::MAX; 6];
        let mut sizes = [(0, 0); 6];
        for _round in 0..5 {
            for (i, &(_, variant)) in variants.iter().enumerate() {
                let mut t = Vec::with_capacity(60);
                for _ in 0..60 {
                    let t0 = Instant::now();
                    sizes[i] = match variant {
                        Variant::Rgb(eighths) => decode(&data, eighths, &mut buf),
                        Variant::Raw => decode_raw(&data, &mut planes),
                        Variant::Zune => decode_zune(&data),
                    };
                    t.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                t.sort_by(f64::total_cmp);
                best[i] = best[i].min(t[t.len() / 2]);
            }
        }
        println!("{w}x{h}, quality 90, {} bytes:", data.len());
        for (i, (name, _)) in variants.iter().enumerate() {
            let (dw, dh) = sizes[i];
            println!(
                "  {name:<10} {:>9}  {:6.3} ms  ({:.2} of full)",
                format!("{dw}x{dh}"),
                best[i],
                best[i] / best[0]
            );
        }
    }
}
