//! Tests of the resampler: bit-exact agreement with Pillow's reference values, the row-filled
//! resize beside a decode, and the team-assisted pass.

use super::*;

/// [`super::resize_rgb`] as Pillow's `resize(size, box=...)`: the passes ordered by the
/// output's size.
#[allow(clippy::too_many_arguments)]
fn resize_rgb(
    src: &[u8],
    sw: usize,
    sh: usize,
    rect: Rect,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    scratch: &mut Scratch,
) {
    super::resize_rgb(src, sw, sh, rect, dst, dw, dh, (dw, dh), scratch);
}

/// [`super::resize_rgb_filled`] as Pillow's `resize(size, box=...)`.
#[allow(clippy::too_many_arguments)]
fn resize_rgb_filled<E>(
    src: &mut [u8],
    sw: usize,
    sh: usize,
    rect: Rect,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    scratch: &mut Scratch,
    fill: impl FnOnce(&mut RowWriter<'_>) -> Result<(), E>,
) -> Result<(), E> {
    super::resize_rgb_filled(src, sw, sh, rect, dst, dw, dh, (dw, dh), scratch, fill)
}

#[test]
fn pillow_reference_values() {
    // Reference: PIL 13, Image.frombytes("RGB", (5, 1), bytes(row)).resize((2, 1), BILINEAR)
    // with row = R ramp 0, 60, 120, 180, 240 (G, B = 0) -> R 60, 180.
    let mut row = Vec::new();
    for v in [0u8, 60, 120, 180, 240] {
        row.extend_from_slice(&[v, 0, 0]);
    }
    let mut out = vec![0u8; 6];
    resize_rgb(
        &row,
        5,
        1,
        (0.0, 0.0, 5.0, 1.0),
        &mut out,
        2,
        1,
        &mut Scratch::default(),
    );
    assert_eq!([out[0], out[3]], [60, 180]);
}

/// The test pattern, also built in Python for the reference values below.
fn pattern() -> Vec<u8> {
    let mut v = Vec::new();
    for y in 0..17usize {
        for x in 0..23usize {
            for c in 0..3usize {
                v.push((((x * 31 + y * 17 + c * 59) % 256) ^ ((x * y) & 0xff)) as u8);
            }
        }
    }
    v
}

#[test]
fn matches_pillow_bit_for_bit() {
    // PIL 13: im.resize((7, 5), BILINEAR) and im.resize((6, 4), BILINEAR, box=(2.5, 1.25, 20, 15))
    // of the 23x17 pattern above.
    let down: [u8; 105] = [
        72, 130, 172, 158, 158, 99, 120, 87, 129, 111, 162, 163, 160, 111, 90, 83, 111, 158, 139,
        172, 88, 126, 170, 152, 160, 111, 91, 85, 118, 166, 155, 161, 99, 119, 79, 131, 119, 163,
        150, 164, 141, 70, 170, 146, 90, 109, 92, 134, 135, 158, 157, 157, 110, 86, 108, 97, 164,
        105, 140, 159, 145, 170, 115, 154, 83, 106, 98, 137, 168, 175, 150, 98, 159, 118, 72, 135,
        84, 136, 102, 162, 165, 164, 152, 122, 96, 97, 161, 142, 151, 155, 171, 137, 66, 173, 109,
        73, 87, 95, 171, 89, 160, 160, 134, 171, 145,
    ];
    let boxed: [u8; 72] = [
        147, 169, 110, 150, 86, 108, 86, 136, 176, 156, 156, 103, 127, 77, 119, 97, 143, 164, 169,
        120, 85, 82, 100, 159, 135, 168, 136, 158, 104, 82, 86, 109, 175, 138, 165, 139, 117, 87,
        127, 118, 153, 170, 174, 139, 87, 140, 89, 118, 114, 99, 149, 98, 147, 172, 88, 128, 175,
        174, 157, 118, 163, 136, 47, 170, 95, 88, 94, 107, 169, 117, 175, 154,
    ];
    let src = pattern();
    let mut tmp = Scratch::default();
    let mut out = vec![0u8; 105];
    resize_rgb(
        &src,
        23,
        17,
        (0.0, 0.0, 23.0, 17.0),
        &mut out,
        7,
        5,
        &mut tmp,
    );
    assert_eq!(out, down);
    let mut out = vec![0u8; 72];
    resize_rgb(
        &src,
        23,
        17,
        (2.5, 1.25, 20.0, 15.0),
        &mut out,
        6,
        4,
        &mut tmp,
    );
    assert_eq!(out, boxed);
}

#[test]
fn vertical_pass_first_where_pillow_runs_it_first() {
    // PIL 13 runs the vertical pass first when the height shrinks by more than twice as many
    // pixels as the width: im.resize((21, 5), BILINEAR) and
    // im.resize((30, 4), BILINEAR, box=(1.5, 0.75, 22, 16.5)) of the 23x17 pattern (the box's
    // order follows the whole image's size). Horizontal first differs on both.
    assert!(!horizontal_first(23, 17, 21, 5));
    assert!(!horizontal_first(23, 17, 30, 4));
    assert!(horizontal_first(23, 17, 7, 5));
    assert!(horizontal_first(640, 480, 224, 224));
    let narrow: [u8; 315] = [
        30, 89, 148, 64, 122, 182, 98, 155, 198, 129, 188, 143, 159, 196, 59, 194, 124, 64, 197,
        56, 101, 105, 67, 126, 51, 104, 164, 74, 136, 190, 113, 175, 206, 140, 193, 126, 183, 167,
        42, 195, 100, 79, 145, 46, 113, 62, 77, 136, 59, 115, 166, 90, 137, 191, 127, 178, 159,
        137, 191, 35, 178, 156, 47, 82, 141, 197, 116, 172, 189, 155, 194, 99, 187, 170, 55, 186,
        89, 78, 141, 60, 118, 70, 78, 146, 59, 116, 182, 87, 152, 200, 134, 192, 141, 171, 196, 87,
        174, 126, 34, 174, 64, 83, 118, 28, 141, 71, 103, 193, 57, 163, 173, 115, 187, 151, 181,
        157, 132, 181, 161, 95, 149, 137, 56, 163, 122, 36, 140, 195, 151, 173, 174, 62, 201, 92,
        64, 164, 71, 99, 81, 76, 136, 60, 111, 167, 86, 144, 198, 146, 172, 177, 177, 175, 121,
        191, 157, 75, 152, 93, 41, 143, 79, 109, 116, 71, 177, 98, 84, 184, 105, 132, 161, 87, 132,
        142, 105, 143, 151, 109, 141, 182, 131, 156, 171, 164, 180, 103, 149, 181, 47, 195, 123,
        60, 186, 58, 100, 110, 70, 136, 59, 104, 164, 78, 145, 183, 118, 174, 182, 181, 173, 136,
        205, 154, 92, 169, 127, 64, 145, 113, 24, 152, 137, 82, 170, 122, 100, 177, 54, 94, 154,
        67, 142, 88, 88, 169, 56, 149, 177, 79, 193, 171, 149, 168, 160, 183, 158, 126, 168, 144,
        108, 145, 148, 120, 177, 53, 113, 66, 90, 157, 59, 127, 193, 95, 151, 206, 144, 157, 163,
        203, 162, 111, 196, 133, 76, 162, 115, 79, 147, 146, 32, 169, 167, 30, 210, 122, 72, 163,
        56, 95, 104, 21, 157, 79, 84, 205, 54, 161, 178, 64, 181, 151, 104, 155, 143, 111, 144,
        170, 86, 157, 188, 138, 176, 133, 188, 190, 109,
    ];
    let boxed: [u8; 360] = [
        84, 140, 192, 107, 160, 193, 127, 180, 155, 146, 192, 107, 163, 192, 58, 179, 150, 60, 192,
        102, 76, 193, 60, 100, 149, 58, 119, 97, 74, 136, 57, 97, 156, 60, 122, 186, 78, 143, 189,
        102, 164, 185, 128, 189, 182, 139, 188, 131, 156, 174, 81, 187, 146, 46, 189, 103, 67, 177,
        67, 93, 151, 40, 119, 93, 75, 149, 60, 96, 153, 49, 109, 140, 78, 150, 178, 109, 152, 183,
        137, 142, 164, 152, 184, 125, 147, 186, 66, 145, 165, 20, 147, 187, 120, 173, 168, 65, 193,
        154, 60, 195, 116, 69, 178, 67, 89, 118, 64, 118, 85, 75, 140, 69, 94, 159, 52, 111, 179,
        78, 137, 192, 114, 161, 192, 127, 169, 164, 156, 182, 122, 177, 183, 82, 173, 155, 56, 170,
        122, 48, 164, 93, 65, 153, 72, 119, 115, 40, 153, 90, 52, 180, 82, 112, 200, 74, 147, 185,
        74, 167, 163, 83, 173, 139, 144, 173, 141, 162, 157, 141, 156, 138, 138, 153, 151, 129,
        151, 150, 102, 151, 147, 68, 193, 87, 75, 182, 55, 97, 128, 69, 119, 87, 84, 139, 59, 103,
        157, 69, 135, 174, 88, 154, 184, 116, 165, 186, 157, 175, 166, 188, 170, 132, 203, 160, 98,
        181, 151, 84, 167, 129, 58, 154, 109, 44, 142, 101, 63, 144, 106, 101, 151, 101, 124, 159,
        77, 123, 157, 74, 136, 147, 79, 145, 129, 91, 148, 90, 98, 154, 68, 119, 160, 61, 151, 165,
        83, 171, 174, 110, 164, 182, 140, 147, 181, 174, 165, 140, 181, 168, 111, 172, 162, 91, 86,
        84, 150, 53, 107, 173, 67, 127, 198, 85, 141, 200, 107, 152, 183, 147, 166, 168, 183, 167,
        133, 209, 158, 93, 196, 135, 81, 178, 124, 77, 159, 121, 66, 146, 131, 29, 154, 149, 23,
        173, 159, 36, 199, 149, 69, 191, 111, 78, 168, 64, 91, 130, 12, 115, 114, 39, 164, 95, 76,
        193, 71, 119, 197, 54, 158, 175, 58, 183, 163, 79, 193, 158, 112, 168, 143, 129, 154, 151,
        131, 150, 169, 105, 153, 172, 120, 159, 152, 151, 169, 127,
    ];
    let src = pattern();
    let mut tmp = Scratch::default();
    let mut out = vec![0u8; narrow.len()];
    resize_rgb(
        &src,
        23,
        17,
        (0.0, 0.0, 23.0, 17.0),
        &mut out,
        21,
        5,
        &mut tmp,
    );
    assert_eq!(out, narrow);
    let mut out = vec![0u8; boxed.len()];
    resize_rgb(
        &src,
        23,
        17,
        (1.5, 0.75, 22.0, 16.5),
        &mut out,
        30,
        4,
        &mut tmp,
    );
    assert_eq!(out, boxed);
    // The row-filled resize (beside a decode) gives the same bytes.
    let mut filled_src = vec![0u8; src.len()];
    let mut out = vec![0u8; narrow.len()];
    resize_rgb_filled(
        &mut filled_src,
        23,
        17,
        (0.0, 0.0, 23.0, 17.0),
        &mut out,
        21,
        5,
        &mut Scratch::default(),
        |w| {
            w.write(17, |rows| {
                rows.copy_from_slice(&src);
                Ok::<(), ()>(())
            })
        },
    )
    .unwrap();
    assert_eq!(out, narrow);
}

#[test]
fn identity_and_constant_images() {
    let src: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
    let mut out = vec![0u8; src.len()];
    resize_rgb(
        &src,
        4,
        3,
        (0.0, 0.0, 4.0, 3.0),
        &mut out,
        4,
        3,
        &mut Scratch::default(),
    );
    assert_eq!(out, src);
    let grey = vec![77u8; 17 * 13 * 3];
    let mut out = vec![0u8; 5 * 4 * 3];
    resize_rgb(
        &grey,
        17,
        13,
        (1.5, 2.25, 16.0, 12.5),
        &mut out,
        5,
        4,
        &mut Scratch::default(),
    );
    assert!(out.iter().all(|&v| v == 77), "{out:?}");
}

/// A worker that helps `team`'s frames until `stop`; returns the parts it ran.
fn helper(
    team: &std::sync::Arc<team::Team>,
    stop: &std::sync::Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let rx = team.member().invitations().clone();
    let stop = std::sync::Arc::clone(stop);
    std::thread::spawn(move || {
        let mut ran = 0;
        while !stop.load(SeqCst) {
            if let Ok(g) = rx.recv_timeout(std::time::Duration::from_millis(5)) {
                ran += team::help(&g, || stop.load(SeqCst));
            }
        }
        ran
    })
}

/// A source image with every byte different from its neighbours'.
fn image(w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| ((i * 131) ^ (i >> 7)) as u8)
        .collect()
}

/// Fills a [`RowWriter`] from `src`, `chunk` rows at a time, pausing after each chunk when
/// `pause` (so that a helper has time to start on the first rows).
fn fill_from(
    src: &[u8],
    chunk: usize,
    pause: bool,
) -> impl FnOnce(&mut RowWriter<'_>) -> Result<(), String> + '_ {
    move |rows| {
        let mut at = 0;
        while rows.left() > 0 {
            rows.write(chunk, |buf| {
                buf.copy_from_slice(&src[at..at + buf.len()]);
                at += buf.len();
                Ok::<_, String>(())
            })?;
            if pause {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
        Ok(())
    }
}

/// The geometries of the filled-resize tests: (source w, h, box, output w, h).
const FILLED: [(usize, usize, Rect, usize, usize); 6] = [
    (640, 480, (0.0, 0.0, 640.0, 480.0), 224, 224),
    (320, 240, (32.0, 8.5, 300.0, 230.0), 96, 96),
    (23, 17, (2.5, 1.25, 20.0, 15.0), 6, 4),
    (100, 37, (0.0, 0.0, 100.0, 37.0), 100, 5),
    (64, 48, (0.0, 0.0, 64.0, 48.0), 20, 48),
    (50, 40, (0.0, 0.0, 50.0, 40.0), 50, 40),
];

/// Decoding rows into the source while the horizontal pass reads those already there gives
/// the bytes of a resize of the whole image: with no helper (the pass after the fill) and
/// with one (beside it, in chunks), for fills of one row at a time to all rows at once,
/// two-pass, one-pass and copy geometries; and the helper really runs the pass.
#[test]
fn a_resize_of_rows_as_they_are_written_matches_a_whole_resize() {
    let team = team::Team::new(2);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let h = helper(&team, &stop);
    let leader = team.member();
    for (filter, (sw, sh, rect, dw, dh)) in [Filter::Bilinear, Filter::Bicubic]
        .into_iter()
        .flat_map(|f| FILLED.into_iter().map(move |g| (f, g)))
    {
        let mut scratch = Scratch::with_filter(filter);
        let whole = image(sw, sh);
        let mut expected = vec![0u8; dw * dh * 3];
        resize_rgb(&whole, sw, sh, rect, &mut expected, dw, dh, &mut scratch);
        for chunk in [1, 7, 16, sh] {
            for helped in [false, true] {
                let mut src = vec![0u8; sw * sh * 3];
                let mut dst = vec![0u8; dw * dh * 3];
                let fill = fill_from(&whole, chunk, helped);
                let run = || {
                    resize_rgb_filled(&mut src, sw, sh, rect, &mut dst, dw, dh, &mut scratch, fill)
                };
                let r = if helped {
                    leader.lead(|| {
                        let t = std::time::Instant::now();
                        while !team::helping() {
                            assert!(t.elapsed().as_secs() < 10, "no helper came");
                            team::invite();
                            std::thread::yield_now();
                        }
                        run()
                    })
                } else {
                    run()
                };
                assert_eq!(r, Ok(()));
                assert_eq!(src, whole, "{sw}x{sh} in chunks of {chunk}");
                assert!(
                    dst == expected,
                    "{filter:?} {sw}x{sh} -> {dw}x{dh} in chunks of {chunk}, helped: {helped}"
                );
            }
        }
    }
    stop.store(true, SeqCst);
    // Six geometries, four of them two-pass, and four fills each with the helper there.
    assert!(h.join().unwrap() > 0, "the helper never ran the pass");
}

/// A decode that fails part way returns its error, with a helper waiting on rows that will
/// never come (it must not hang) and without one.
#[test]
fn a_fill_that_fails_part_way_returns_its_error() {
    let team = team::Team::new(2);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let h = helper(&team, &stop);
    let leader = team.member();
    let (sw, sh) = (64, 64);
    let whole = image(sw, sh);
    for helped in [false, true] {
        let mut src = vec![0u8; sw * sh * 3];
        let mut dst = vec![0u8; 16 * 16 * 3];
        let mut scratch = Scratch::default();
        let fill = |rows: &mut RowWriter<'_>| {
            rows.write(20, |buf| {
                buf.copy_from_slice(&whole[..buf.len()]);
                Ok::<_, String>(())
            })?;
            std::thread::sleep(std::time::Duration::from_millis(1));
            rows.write(20, |_| Err("corrupt data at row 20".to_string()))
        };
        let mut run = || {
            resize_rgb_filled(
                &mut src,
                sw,
                sh,
                (0.0, 0.0, 64.0, 64.0),
                &mut dst,
                16,
                16,
                &mut scratch,
                fill,
            )
        };
        let r = if helped { leader.lead(run) } else { run() };
        assert_eq!(
            r,
            Err("corrupt data at row 20".to_string()),
            "helped: {helped}"
        );
    }
    stop.store(true, SeqCst);
    h.join().unwrap();
}

/// The AVX2 horizontal pass gives the plain pass's bytes: down- and upscaling, crop boxes,
/// odd and even widths, sources narrower than the filter, every row (the last row's last
/// pixels take the plain path inside the AVX2 pass).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_horizontal_pass_matches_the_plain_one() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("no AVX2 on this CPU: only the plain pass exists here");
        return;
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut cases = 0;
    for (sw, ow) in [
        (640, 224),
        (1280, 224),
        (23, 7),
        (5, 2),
        (3, 8),
        (224, 224),
        (300, 301),
        (2, 1),
        (97, 33),
    ] {
        for boxed in [false, true] {
            let rows = 3;
            let src: Vec<u8> = (0..sw * rows * 3).map(|_| next() as u8).collect();
            let (x0, x1) = if boxed {
                (sw as f64 * 0.13, sw as f64 * 0.91)
            } else {
                (0.0, sw as f64)
            };
            // Bicubic's negative lobes take sums below 0 and above 255: both clip alike.
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                let c = Coeffs::with_filter(filter, sw, x0, x1, ow);
                let pairs = Pairs::new(&c, sw);
                let mut plain = vec![0u8; ow * rows * 3];
                let mut fast = vec![0u8; ow * rows * 3];
                horizontal_plain(&src, sw, 0, &c, &mut plain, ow, rows);
                horizontal(&src, sw, 0, &c, &pairs, &mut fast, ow, rows);
                assert_eq!(fast, plain, "{filter:?} {sw} -> {ow}, box {boxed}");
                // From a later row, as the two-pass resize calls it.
                let mut plain = vec![0u8; ow * 3];
                let mut fast = vec![0u8; ow * 3];
                horizontal_plain(&src, sw, 2, &c, &mut plain, ow, 1);
                horizontal(&src, sw, 2, &c, &pairs, &mut fast, ow, 1);
                assert_eq!(fast, plain, "{filter:?} {sw} -> {ow}, box {boxed}, row 2");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 36);
    // Extreme pixels: all 0 and all 255 stay so (the saturating pack matches clip8).
    for v in [0u8, 255] {
        let src = vec![v; 640 * 3];
        let c = Coeffs::new(640, 0.0, 640.0, 224);
        let mut fast = vec![1u8; 224 * 3];
        horizontal(&src, 640, 0, &c, &Pairs::new(&c, 640), &mut fast, 224, 1);
        assert!(fast.iter().all(|&x| x == v));
    }
}
