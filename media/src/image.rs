//! Small image operations on packed RGB24 pictures, with the arithmetic of the OpenCV
//! functions the reference tools use (so scores computed here agree with theirs).

/// A packed RGB24 picture.
#[derive(Debug, Clone)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes, rows top to bottom.
    pub data: Vec<u8>,
}

impl Rgb {
    /// Resizes with bilinear interpolation, pixel centres aligned as OpenCV's
    /// `cv2.resize(..., interpolation=INTER_LINEAR)` does: see [`resize_rgb`].
    pub fn resize_bilinear(&self, width: usize, height: usize) -> Rgb {
        Rgb {
            width,
            height,
            data: resize_rgb(&self.data, (self.width, self.height), (width, height)),
        }
    }

    /// The hue, saturation and value planes of OpenCV's 8-bit `COLOR_RGB2HSV` (hue in
    /// `0..180`), with its fixed-point arithmetic.
    pub fn hsv_planes(&self) -> [Vec<u8>; 3] {
        hsv_planes(&self.data, self.width * self.height)
    }

    /// Luma (BT.601, as OpenCV's `COLOR_RGB2GRAY`), one byte per pixel.
    pub fn gray(&self) -> Vec<u8> {
        gray_of_rgb(&self.data)
    }
}

/// Packed RGB24 `data` of size `from` resized to `to` with bilinear interpolation, pixel
/// centres aligned and no antialiasing, as OpenCV's `INTER_LINEAR` (fast_image_resize's
/// fixed-kernel interpolation, SIMD: measured on a 1280x720 frame of the trailer to
/// 1312x736, 2.1 ms against 19.9 ms for a scalar loop, every pixel within 1 of
/// `cv2.resize`). An empty size, or `data` of another length, gives black.
pub fn resize_rgb(data: &[u8], from: (usize, usize), to: (usize, usize)) -> Vec<u8> {
    use fast_image_resize as fr;
    let mut out = vec![0u8; to.0 * to.1 * 3];
    if from.0 * from.1 == 0 || to.0 * to.1 == 0 || data.len() != from.0 * from.1 * 3 {
        return out;
    }
    if from == to {
        out.copy_from_slice(data);
        return out;
    }
    let (Ok(fw), Ok(fh), Ok(tw), Ok(th)) = (
        u32::try_from(from.0),
        u32::try_from(from.1),
        u32::try_from(to.0),
        u32::try_from(to.1),
    ) else {
        return out;
    };
    let resized = fr::images::ImageRef::new(fw, fh, data, fr::PixelType::U8x3).and_then(|src| {
        let mut dst = fr::images::Image::from_slice_u8(tw, th, &mut out, fr::PixelType::U8x3)?;
        let options = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear));
        fr::Resizer::new()
            .resize(&src, &mut dst, &options)
            .map_err(|_| fr::ImageBufferError::InvalidBufferSize)
    });
    if let Err(e) = resized {
        log::error!("resizing {from:?} to {to:?} failed: {e}");
    }
    out
}

/// The hue, saturation and value planes of OpenCV's 8-bit `COLOR_RGB2HSV` (hue in
/// `0..180`) of the first `n` pixels of packed RGB24 bytes, with its fixed-point
/// arithmetic.
pub fn hsv_planes(rgb: &[u8], n: usize) -> [Vec<u8>; 3] {
    let n = n.min(rgb.len() / 3);
    let (mut h, mut s, mut v) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
    hsv_into(&rgb[..3 * n], &mut h, &mut s, &mut v);
    [h, s, v]
}

/// [`hsv_planes`]' kernel, compiled for AVX2 too and chosen at run time (it runs once per
/// pixel of every decoded frame in `detect_shots`: 4x faster than the table-driven
/// version with branches this replaced, benches/RESULTS.md).
///
/// OpenCV divides through two tables, `round((255 << 12) / v)` and
/// `round((180 << 12) / (6 * diff))`; here the same integers come from one f32 division
/// each (correctly rounded, so exact for every `v` and `diff` in `1..=255`: the test
/// `hsv_equals_opencv_tables_on_every_colour` compares all 2^24 colours), which the
/// compiler vectorises where table lookups and branches kept it scalar. No SIMD crate
/// fits: this is OpenCV's arithmetic, not a standard conversion.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1", "aarch64+neon"))]
fn hsv_into(rgb: &[u8], h: &mut [u8], s: &mut [u8], v: &mut [u8]) {
    const HALF: i32 = 1 << 11;
    let n = (rgb.len() / 3).min(h.len()).min(s.len()).min(v.len());
    let (rgb, h, s, v) = (&rgb[..3 * n], &mut h[..n], &mut s[..n], &mut v[..n]);
    for i in 0..n {
        let (r, g, b) = (
            i32::from(rgb[3 * i]),
            i32::from(rgb[3 * i + 1]),
            i32::from(rgb[3 * i + 2]),
        );
        let max = r.max(g).max(b);
        let diff = max - r.min(g).min(b);
        // SAFETY: both quotients are finite, positive and below 2^21, in i32's range.
        let (sdiv, hdiv) = unsafe {
            (
                (((255 << 12) as f32 / max.max(1) as f32) + 0.5).to_int_unchecked::<i32>(),
                (((180 << 12) as f32 / (6 * diff.max(1)) as f32) + 0.5).to_int_unchecked::<i32>(),
            )
        };
        let sdiv = if max == 0 { 0 } else { sdiv };
        let hdiv = if diff == 0 { 0 } else { hdiv };
        let sat = (diff * sdiv + HALF) >> 12;
        let raw = if max == r {
            g - b
        } else if max == g {
            b - r + 2 * diff
        } else {
            r - g + 4 * diff
        };
        let hue = (raw * hdiv + HALF) >> 12;
        let hue = hue + if hue < 0 { 180 } else { 0 };
        h[i] = hue.clamp(0, 255) as u8;
        s[i] = sat.clamp(0, 255) as u8;
        v[i] = max as u8;
    }
}

/// Luma (BT.601, as OpenCV's `COLOR_RGB2GRAY`) of packed RGB24 bytes, one byte per pixel.
pub fn gray_of_rgb(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            let y = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
            y.round().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// Mean absolute difference of two planes of the same size.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    abs_diff_sum(a, b) as f64 / a.len() as f64
}

/// The sum of `|a - b|` over two planes, in u32 lanes per block of 2^16 bytes (a block's
/// sum fits 32 bits), so that it vectorises (with AVX2 where the CPU has it): 5x the
/// per-byte u64 sum this replaced.
///
/// Plain loops, no closures: a closure inside a function compiled for AVX2
/// inherits the target feature, so the generic `Map::fold` that calls it cannot inline it
/// and calls it once per byte (perf on the release CLI: this function was 5% of the exact
/// shot detector's CPU, a function call per byte, before it was written this way).
#[multiversion::multiversion(targets("x86_64+avx2", "aarch64+neon"))]
fn abs_diff_sum(a: &[u8], b: &[u8]) -> u64 {
    const BLOCK: usize = 1 << 16;
    let mut total = 0u64;
    for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut block = 0u32;
        for (p, q) in x.iter().zip(y) {
            block += u32::from(p.abs_diff(*q));
        }
        total += u64::from(block);
    }
    total
}

/// The source taps of one destination column (or row): `(source index, weight)`.
type Taps = Vec<Vec<(usize, f64)>>;

/// OpenCV's `INTER_AREA` taps along one axis from `src` to `dst` samples: true area
/// averaging when shrinking (`computeResizeAreaTab`), and its bilinear variant otherwise.
fn area_taps(src: usize, dst: usize, shrinking: bool) -> Taps {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            if shrinking {
                let fsx1 = d as f64 * scale;
                let fsx2 = fsx1 + scale;
                let cell = scale.min(src as f64 - fsx1);
                let sx2 = (fsx2.floor() as usize).min(src - 1);
                let sx1 = (fsx1.ceil() as usize).min(sx2);
                let mut taps = Vec::new();
                if sx1 as f64 - fsx1 > 1e-3 {
                    taps.push((sx1 - 1, (sx1 as f64 - fsx1) / cell));
                }
                taps.extend((sx1..sx2).map(|s| (s, 1.0 / cell)));
                if fsx2 - sx2 as f64 > 1e-3 {
                    taps.push((sx2, (fsx2 - sx2 as f64).min(1.0).min(cell) / cell));
                }
                taps
            } else {
                let inv = dst as f64 / src as f64;
                let s = (d as f64 * scale).floor();
                let f = (d + 1) as f64 - (s + 1.0) * inv;
                let f = if f <= 0.0 { 0.0 } else { f - f.floor() };
                let s = s as usize;
                if s + 1 >= src {
                    vec![(src - 1, 1.0)]
                } else {
                    vec![(s, 1.0 - f), (s + 1, f)]
                }
            }
        })
        .collect()
}

/// Resizes a packed 3-channel picture of `f64` samples as OpenCV's
/// `cv2.resize(..., interpolation=INTER_AREA)`: area averaging when both sides shrink (or
/// stay), its bilinear variant when either side grows.
pub fn resize_area(src: &[f64], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f64> {
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return vec![0.0; dw * dh * 3];
    }
    let shrinking = sw >= dw && sh >= dh;
    let xs = area_taps(sw, dw, shrinking);
    let ys = area_taps(sh, dh, shrinking);
    // rows first, then columns
    let mut rows = vec![0f64; sh * dw * 3];
    for y in 0..sh {
        for (dx, taps) in xs.iter().enumerate() {
            for c in 0..3 {
                rows[(y * dw + dx) * 3 + c] = taps
                    .iter()
                    .map(|&(sx, w)| src[(y * sw + sx) * 3 + c] * w)
                    .sum();
            }
        }
    }
    let mut out = vec![0f64; dw * dh * 3];
    for (dy, taps) in ys.iter().enumerate() {
        for dx in 0..dw {
            for c in 0..3 {
                out[(dy * dw + dx) * 3 + c] = taps
                    .iter()
                    .map(|&(sy, w)| rows[(sy * dw + dx) * 3 + c] * w)
                    .sum();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_matches_opencv_on_primaries() {
        let img = Rgb {
            width: 4,
            height: 1,
            data: vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 128, 128, 128],
        };
        let [h, s, v] = img.hsv_planes();
        // cv2.cvtColor(np.uint8([[[255,0,0],[0,255,0],[0,0,255],[128,128,128]]]), COLOR_RGB2HSV)
        assert_eq!(h, [0, 60, 120, 0]);
        assert_eq!(s, [255, 255, 255, 0]);
        assert_eq!(v, [255, 255, 255, 128]);
    }

    /// OpenCV's `RGB2HSV_b` as it is written: division tables and branches.
    fn opencv_hsv(r: i32, g: i32, b: i32) -> [u8; 3] {
        let table = |num: f64, i: i32| {
            if i == 0 {
                0
            } else {
                (num * 4096.0 / f64::from(i)).round() as i32
            }
        };
        let max = r.max(g).max(b);
        let diff = max - r.min(g).min(b);
        let sat = (diff * table(255.0, max) + 2048) >> 12;
        let raw = if max == r {
            g - b
        } else if max == g {
            b - r + 2 * diff
        } else {
            r - g + 4 * diff
        };
        let mut hue = (raw * table(30.0, diff) + 2048) >> 12;
        if hue < 0 {
            hue += 180;
        }
        [hue as u8, sat as u8, max as u8]
    }

    #[test]
    fn hsv_equals_opencv_tables_on_every_colour() {
        // all 2^24 colours, one red value per call
        for r in 0..=255u8 {
            let rgb: Vec<u8> = (0..=255u8)
                .flat_map(|g| (0..=255u8).flat_map(move |b| [r, g, b]))
                .collect();
            let [h, s, v] = hsv_planes(&rgb, 1 << 16);
            for (i, p) in rgb.chunks_exact(3).enumerate() {
                let want = opencv_hsv(p[0].into(), p[1].into(), p[2].into());
                assert_eq!([h[i], s[i], v[i]], want, "RGB {p:?}");
            }
        }
    }

    #[test]
    fn mean_abs_diff_over_blocks() {
        // more than one 2^16 block, every difference 255 or 1
        let a: Vec<u8> = (0..200_000)
            .map(|i| if i % 2 == 0 { 255 } else { 1 })
            .collect();
        let b: Vec<u8> = (0..200_000)
            .map(|i| if i % 2 == 0 { 0 } else { 2 })
            .collect();
        assert_eq!(mean_abs_diff(&a, &b), 128.0);
        assert_eq!(mean_abs_diff(&a, &a[..10]), 0.0);
    }

    #[test]
    fn area_resize_matches_opencv() {
        // cv2.resize(np.arange(45.0).reshape(3, 5, 3), (3, 2) | (7, 4), interpolation=INTER_AREA)[:, :, 0]
        let src: Vec<f64> = (0..45).map(f64::from).collect();
        let first = |v: Vec<f64>| v.chunks(3).map(|p| p[0]).collect::<Vec<_>>();
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        let down = first(resize_area(&src, 5, 3, 3, 2));
        assert!(
            close(&down, &[6.2, 11.0, 15.8, 26.2, 31.0, 35.8]),
            "{down:?}"
        );
        let up = first(resize_area(&src, 5, 3, 7, 4));
        let want = [
            0.0, 1.8, 3.6, 6.0, 8.4, 10.2, 12.0, 10.0, 11.8, 13.6, 16.0, 18.4, 20.2, 22.0, 20.0,
            21.8, 23.6, 26.0, 28.4, 30.2, 32.0, 30.0, 31.8, 33.6, 36.0, 38.4, 40.2, 42.0,
        ];
        assert!(close(&up, &want), "{up:?}");
    }

    #[test]
    fn bilinear_halving_averages_pairs() {
        let img = Rgb {
            width: 4,
            height: 2,
            data: (0..24).map(|i| (i * 10) as u8).collect(),
        };
        let small = img.resize_bilinear(2, 1);
        assert_eq!((small.width, small.height, small.data.len()), (2, 1, 6));
        // centre of the 2x2 block: the average of its four pixels
        let expect = |x: usize, c: usize| {
            let p = |xx: usize, yy: usize| f32::from(img.data[(yy * 4 + xx) * 3 + c]);
            ((p(x, 0) + p(x + 1, 0) + p(x, 1) + p(x + 1, 1)) / 4.0).round() as u8
        };
        assert_eq!(small.data[0], expect(0, 0));
        assert_eq!(small.data[3], expect(2, 0));
        assert_eq!(mean_abs_diff(&[0, 10], &[5, 5]), 5.0);
    }
}
