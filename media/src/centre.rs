//! Centre sampling: a picture that keeps, of each `d` x `d` block of a frame, the pixel at
//! the block's centre, converted to RGB.
//!
//! When a picture's size divides the frame's by the same odd integer `d` (a 720p frame at
//! PySceneDetect's 256-pixel scoring size: 5), OpenCV's `INTER_LINEAR` shrink reads
//! exactly these pixels (its source coordinate `(x + 0.5) * d - 0.5` is an integer, so the
//! second tap weighs nothing), and OpenCV's `VideoCapture` converts them with swscale's
//! unscaled YUV to RGB, which reads each pixel's chroma sample without interpolation. So
//! this picture is PySceneDetect's up to the rounding of the conversion (swscale's
//! `FAST_BILINEAR` shrink, used before, mixed in the neighbours: one cut of the 10-minute
//! `bbb.mp4` was a frame off PySceneDetect's and is now on it). It is also cheaper:
//! swscale's generic scaler pads any horizontal filter to four taps and converts to packed
//! RGB with scalar table code (7% of an exact `detect_shots` pass's CPU, perf on the
//! release CLI), while this gathers one sample per output pixel and converts with
//! `yuvutils-rs`'s SIMD code. Most of what is left is the first touch of the frame's rows
//! (cache misses on the gather's loads), which any reader of the pixels pays: the pass's
//! CPU fell by about 1% (benches/RESULTS.md).
//!
//! The gather below is index arithmetic only; every value it writes is a source sample.

use yuvutils_rs::{YuvPlanarImage, YuvRange, YuvStandardMatrix, yuv444_to_rgb};

use crate::colour::{ColourKey, Matrix, colour_key};
use crate::ffmpeg::{self, format::Pixel};

/// The odd integer factor by which `width` x `height` divides `frame`'s size in both
/// directions, when there is one.
fn odd_factor(frame: &ffmpeg::frame::Video, width: u32, height: u32) -> Option<usize> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (pw, ph) = (width as usize, height as usize);
    if pw == 0 || ph == 0 {
        return None;
    }
    let d = w / pw;
    (d % 2 == 1 && w == pw * d && h == ph * d).then_some(d)
}

/// The chroma subsampling (log2, horizontal and vertical) and range of the 8-bit planar
/// YUV formats this module reads; `None` for the others.
fn planar_yuv(format: Pixel) -> Option<(usize, usize, bool)> {
    Some(match format {
        Pixel::YUV420P => (1, 1, false),
        Pixel::YUVJ420P => (1, 1, true),
        Pixel::YUV422P => (1, 0, false),
        Pixel::YUVJ422P => (1, 0, true),
        Pixel::YUV444P => (0, 0, false),
        Pixel::YUVJ444P => (0, 0, true),
        _ => return None,
    })
}

/// The matrix and range swscale would convert `frame` with under `matrix` (see
/// [`crate::colour`]), when `yuvutils-rs` has the same matrix.
fn conversion(
    frame: &ffmpeg::frame::Video,
    matrix: Matrix,
    format_full: bool,
) -> Option<(YuvStandardMatrix, YuvRange)> {
    let key: ColourKey = colour_key(frame, matrix);
    let (space, full) = match key {
        // swscale's defaults: BT.601, the range the pixel format implies
        None => (5, None),
        Some(key) => key,
    };
    let standard = match space {
        1 => YuvStandardMatrix::Bt709,
        5 | 6 => YuvStandardMatrix::Bt601,
        7 => YuvStandardMatrix::Smpte240,
        9 | 10 => YuvStandardMatrix::Bt2020,
        _ => return None,
    };
    let range = if full.unwrap_or(format_full) {
        YuvRange::Full
    } else {
        YuvRange::Limited
    };
    Some((standard, range))
}

/// The centre-sampled RGB picture of `frame` at `width` x `height` (packed, 3 bytes per
/// pixel), or `None` when the sizes are not an odd integer factor apart or the frame is
/// not 8-bit planar YUV with a matrix `yuvutils-rs` knows: the caller scales instead.
pub(crate) fn centre_sample_rgb(
    frame: &ffmpeg::frame::Video,
    width: u32,
    height: u32,
    matrix: Matrix,
) -> Option<Vec<u8>> {
    let d = odd_factor(frame, width, height)?;
    let (cx, cy, format_full) = planar_yuv(frame.format())?;
    let (standard, range) = conversion(frame, matrix, format_full)?;
    let (pw, ph) = (width as usize, height as usize);
    let centre = d / 2;
    let strides = [frame.stride(0), frame.stride(1), frame.stride(2)];
    let (luma, cb, cr) = (frame.data(0), frame.data(1), frame.data(2));
    let mut planes = [vec![0u8; pw * ph], vec![0u8; pw * ph], vec![0u8; pw * ph]];
    let [y_out, u_out, v_out] = &mut planes;
    for row in 0..ph {
        let sy = row * d + centre;
        let y_row = luma.get(sy * strides[0]..)?;
        let u_row = cb.get((sy >> cy) * strides[1]..)?;
        let v_row = cr.get((sy >> cy) * strides[2]..)?;
        let out = row * pw..(row + 1) * pw;
        for (x, ((y, u), v)) in y_out[out.clone()]
            .iter_mut()
            .zip(&mut u_out[out.clone()])
            .zip(&mut v_out[out])
            .enumerate()
        {
            let sx = x * d + centre;
            *y = *y_row.get(sx)?;
            *u = *u_row.get(sx >> cx)?;
            *v = *v_row.get(sx >> cx)?;
        }
    }
    let image = YuvPlanarImage {
        y_plane: y_out,
        y_stride: width,
        u_plane: u_out,
        u_stride: width,
        v_plane: v_out,
        v_stride: width,
        width,
        height,
    };
    let mut rgb = vec![0u8; pw * ph * 3];
    yuv444_to_rgb(&image, &mut rgb, width * 3, range, standard).ok()?;
    Some(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffmpeg::software::scaling;

    /// A frame of `format` with smooth gradients and sharp detail in every plane.
    fn frame(format: Pixel, w: u32, h: u32) -> ffmpeg::frame::Video {
        ffmpeg::init().unwrap_or_else(|e| panic!("{e}"));
        let mut frame = ffmpeg::frame::Video::new(format, w, h);
        for plane in 0..3 {
            let stride = frame.stride(plane);
            let rows = frame.plane_height(plane) as usize;
            let cols = frame.plane_width(plane) as usize;
            let data = frame.data_mut(plane);
            for r in 0..rows {
                for c in 0..cols {
                    let v = (r * 7 + c * (3 + plane) + (r * c) % 29) % 256;
                    data[r * stride + c] = if plane == 0 { 16 + v * 219 / 255 } else { v } as u8;
                }
            }
        }
        frame
    }

    /// What OpenCV's `VideoCapture` then `resize(INTER_LINEAR)` by an odd factor gives:
    /// swscale's unscaled conversion of the whole frame, then the centre pixel of each block.
    fn reference(frame: &ffmpeg::frame::Video, d: usize, centre: usize) -> Vec<u8> {
        let (w, h) = (frame.width(), frame.height());
        let mut context = scaling::Context::get(
            frame.format(),
            w,
            h,
            Pixel::RGB24,
            w,
            h,
            scaling::Flags::BICUBIC,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut rgb = ffmpeg::frame::Video::empty();
        context
            .run(frame, &mut rgb)
            .unwrap_or_else(|e| panic!("{e}"));
        let (stride, data) = (rgb.stride(0), rgb.data(0));
        let mut out = Vec::new();
        for y in 0..h as usize / d {
            for x in 0..w as usize / d {
                let at = (y * d + centre) * stride + (x * d + centre) * 3;
                out.extend_from_slice(&data[at..at + 3]);
            }
        }
        out
    }

    /// BT.601 in floating point, rounded: the conversion both should approximate.
    fn exact(frame: &ffmpeg::frame::Video, d: usize) -> Vec<u8> {
        let Some((cx, cy, full)) = planar_yuv(frame.format()) else {
            panic!("not planar YUV");
        };
        let (ys, cs, black) = if full {
            (1.0, 1.0, 0.0)
        } else {
            (255.0 / 219.0, 255.0 / 224.0, 16.0)
        };
        let sample = |plane: usize, x: usize, y: usize| {
            frame.data(plane)[y * frame.stride(plane) + x] as f64
        };
        let mut out = Vec::new();
        for y in 0..frame.height() as usize / d {
            for x in 0..frame.width() as usize / d {
                let (sx, sy) = (x * d + d / 2, y * d + d / 2);
                let l = (sample(0, sx, sy) - black) * ys;
                let u = (sample(1, sx >> cx, sy >> cy) - 128.0) * cs;
                let v = (sample(2, sx >> cx, sy >> cy) - 128.0) * cs;
                for c in [
                    l + 1.402 * v,
                    l - 0.344136 * u - 0.714136 * v,
                    l + 1.772 * u,
                ] {
                    out.push(c.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        out
    }

    /// The largest and the mean difference of two pictures.
    fn difference(a: &[u8], b: &[u8]) -> (u8, f64) {
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0);
        let total: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
        (worst, total as f64 / a.len() as f64)
    }

    #[test]
    fn centre_samples_are_opencvs_pixels() {
        for (format, w, h, d) in [
            (Pixel::YUV420P, 1280, 720, 5),
            (Pixel::YUVJ420P, 1280, 720, 5),
            (Pixel::YUV444P, 640, 360, 5),
            (Pixel::YUV420P, 176, 144, 1),
            (Pixel::YUV422P, 384, 216, 3),
        ] {
            let frame = frame(format, w, h);
            let (pw, ph) = (w / d as u32, h / d as u32);
            let Some(ours) = centre_sample_rgb(&frame, pw, ph, Matrix::Bt601) else {
                panic!("{format:?} {w}x{h}: not centre-sampled");
            };
            // BT.601 in the frame's range, at most 2 levels from exact (0.3 on average)
            let (worst, mean) = difference(&ours, &exact(&frame, d));
            assert!(
                worst <= 2 && mean < 0.5,
                "{format:?}: {worst} / {mean} from exact"
            );
            // swscale's unscaled conversion (OpenCV's) has less precision (up to 3 levels
            // from exact): the two differ by at most 4 levels, 1 on average
            let (worst, mean) = difference(&ours, &reference(&frame, d, d / 2));
            assert!(
                worst <= 4 && mean < 1.2,
                "{format:?}: {worst} / {mean} from swscale"
            );
            // and the grid is the same: the pixels one to the right and down are far off
            if d > 1 {
                let (shifted, _) = difference(&ours, &reference(&frame, d, d / 2 + 1));
                assert!(shifted > 20, "{format:?}: shifted grid off by {shifted}");
            }
        }
    }

    #[test]
    fn other_sizes_and_formats_are_left_to_swscale() {
        let f = frame(Pixel::YUV420P, 1280, 720);
        // an even factor: OpenCV averages two taps
        assert!(centre_sample_rgb(&f, 640, 360, Matrix::Bt601).is_none());
        // not an integer factor (1080p at 256 pixels)
        assert!(centre_sample_rgb(&f, 300, 169, Matrix::Bt601).is_none());
        let nv12 = ffmpeg::frame::Video::new(Pixel::NV12, 1280, 720);
        assert!(centre_sample_rgb(&nv12, 256, 144, Matrix::Bt601).is_none());
    }
}
