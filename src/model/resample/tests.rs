//! Tests of the resampler: bit-exact agreement with Pillow's reference values, the row-filled
//! resize beside a decode, and the team-assisted pass.

use super::*;

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
    let mut scratch = Scratch::default();
    for (sw, sh, rect, dw, dh) in FILLED {
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
                    "{sw}x{sh} -> {dw}x{dh} in chunks of {chunk}, helped: {helped}"
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
            let c = Coeffs::new(sw, x0, x1, ow);
            let pairs = Pairs::new(&c, sw);
            let mut plain = vec![0u8; ow * rows * 3];
            let mut fast = vec![0u8; ow * rows * 3];
            horizontal_plain(&src, sw, 0, &c, &mut plain, ow, rows);
            horizontal(&src, sw, 0, &c, &pairs, &mut fast, ow, rows);
            assert_eq!(fast, plain, "{sw} -> {ow}, box {boxed}");
            // From a later row, as the two-pass resize calls it.
            let mut plain = vec![0u8; ow * 3];
            let mut fast = vec![0u8; ow * 3];
            horizontal_plain(&src, sw, 2, &c, &mut plain, ow, 1);
            horizontal(&src, sw, 2, &c, &pairs, &mut fast, ow, 1);
            assert_eq!(fast, plain, "{sw} -> {ow}, box {boxed}, row 2");
            cases += 1;
        }
    }
    assert_eq!(cases, 18);
    // Extreme pixels: all 0 and all 255 stay so (the saturating pack matches clip8).
    for v in [0u8, 255] {
        let src = vec![v; 640 * 3];
        let c = Coeffs::new(640, 0.0, 640.0, 224);
        let mut fast = vec![1u8; 224 * 3];
        horizontal(&src, 640, 0, &c, &Pairs::new(&c, 640), &mut fast, 224, 1);
        assert!(fast.iter().all(|&x| x == v));
    }
}
