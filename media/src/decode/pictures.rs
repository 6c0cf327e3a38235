//! Decoded frames as a pass's consumers see them ([`Decoded`]) and the pictures they ask
//! of them ([`Pictures::get`]): a size, a pixel format and an interpolation, converted
//! straight from the decoder's YUV by swscale (or, for a centre-sampled shrink,
//! [`Filter::CentreSample`], by a gather and a SIMD conversion), once per frame and
//! [`PictureSpec`].

use std::cell::RefCell;
use std::sync::Arc;

use super::FrameMotion;
use super::stream::decode_error;
use crate::MediaError;
use crate::centre::centre_sample_rgb;
pub use crate::colour::Matrix;
use crate::colour::{ColourKey, colour_key, configure};
use crate::ffmpeg::{self, format::Pixel, software::scaling};

/// Pixel formats of [`Picture`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PictureFormat {
    /// Packed RGB, 3 bytes per pixel.
    Rgb24,
    /// Luma, 1 byte per pixel.
    Gray8,
}

/// swscale's interpolation for a [`Picture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Bilinear (the `scale` filter's `bilinear`).
    Bilinear,
    /// Bicubic (the `scale` filter's default).
    Bicubic,
    /// Area averaging.
    Area,
    /// Fast bilinear: two taps, for a cheap look.
    FastBilinear,
    /// A shrink for a cheap look at a much smaller picture: swscale reads one source row
    /// in every `⌊height / picture height⌋` (the middle row of each band, where a two-tap
    /// shrink such as OpenCV's `INTER_LINEAR` reads at an integer factor), then scales
    /// those rows with [`Filter::FastBilinear`]. The rows it skips are never read, so a
    /// 720p frame costs a fifth of a full-frame scale at 256 pixels; frames in formats
    /// other than 8-bit planar YUV, NV12 and grey are scaled whole.
    TwoTapShrink,
    /// The pixel at the centre of each block, when the picture's size divides the frame's
    /// by an odd integer (a 720p frame at 256 pixels: 5) and the frame is 8-bit planar
    /// YUV: the pixels OpenCV's `INTER_LINEAR` reads at that factor, converted to RGB
    /// without swscale (the `centre` module; RGB only). Otherwise as
    /// [`Filter::TwoTapShrink`].
    CentreSample,
}

impl Filter {
    fn flags(self) -> scaling::Flags {
        match self {
            Filter::Bilinear => scaling::Flags::BILINEAR,
            Filter::Bicubic => scaling::Flags::BICUBIC,
            Filter::Area => scaling::Flags::AREA,
            Filter::FastBilinear | Filter::TwoTapShrink | Filter::CentreSample => {
                scaling::Flags::FAST_BILINEAR
            }
        }
    }
}

/// A picture a consumer asks of a frame: size, format and interpolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PictureSpec {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format.
    pub format: PictureFormat,
    /// Interpolation.
    pub filter: Filter,
    /// YUV matrix and range ([`Matrix::Tagged`]: the frame's tags, as ffmpeg).
    pub matrix: Matrix,
}

/// A converted picture, packed (no row padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel format.
    pub format: PictureFormat,
    /// `width * height * bytes per pixel` bytes, rows top to bottom.
    pub data: Vec<u8>,
}

/// A decoded frame as consumers see it.
pub struct Decoded {
    pub(super) frame: ffmpeg::frame::Video,
    /// Timestamp in stream ticks.
    pub ts: i64,
    /// Presentation timestamp in seconds from the stream's start.
    pub pts_s: f64,
    /// Presentation-order index of the frame in its stream (0-based; from the timestamp
    /// when not every frame is decoded from the start).
    pub index: i64,
    /// Whether the frame is a keyframe (or an intra frame).
    pub is_keyframe: bool,
    /// Whether the frame is a B-frame.
    pub is_bidirectional: bool,
    /// The codec's motion vectors, summarised, when asked for and exported.
    pub motion: Option<FrameMotion>,
    pub(super) pictures: RefCell<Vec<(PictureSpec, Arc<Picture>)>>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("ts", &self.ts)
            .field("pts_s", &self.pts_s)
            .field("index", &self.index)
            .field("is_keyframe", &self.is_keyframe)
            .finish_non_exhaustive()
    }
}

impl Decoded {
    /// A frame at time 0 with nothing else known (tests).
    #[cfg(test)]
    fn bare(frame: ffmpeg::frame::Video) -> Self {
        Self {
            frame,
            ts: 0,
            pts_s: 0.0,
            index: 0,
            is_keyframe: true,
            is_bidirectional: false,
            motion: None,
            pictures: RefCell::default(),
        }
    }

    /// The decoded picture's width.
    pub fn width(&self) -> u32 {
        self.frame.width()
    }

    /// The decoded picture's height.
    pub fn height(&self) -> u32 {
        self.frame.height()
    }
}

/// A scaler's source format and size, and the picture it makes.
type ScalerKey = (Pixel, u32, u32, PictureSpec, ColourKey);

/// Converts frames to pictures with swscale, one context per source format and spec,
/// caching each frame's pictures on the frame.
#[derive(Default)]
pub struct Pictures {
    scalers: RefCell<Vec<(ScalerKey, scaling::Context)>>,
    display: String,
}

impl Pictures {
    /// A converter for frames of the video named `display` (in error messages).
    pub fn new(display: &str) -> Self {
        Self {
            scalers: RefCell::default(),
            display: display.to_owned(),
        }
    }

    /// The picture `spec` of `frame`, converted once per frame and spec.
    pub fn get(&self, frame: &Decoded, spec: PictureSpec) -> Result<Arc<Picture>, MediaError> {
        if let Some(picture) = cached(frame, spec) {
            return Ok(picture);
        }
        let picture = Arc::new(self.convert(&frame.frame, spec)?);
        frame
            .pictures
            .borrow_mut()
            .push((spec, Arc::clone(&picture)));
        Ok(picture)
    }

    /// The picture `spec` of `frame`, for a caller that keeps it: moved out of the
    /// frame's cache when another consumer converted it already (a copy), else converted
    /// without caching it (no copy).
    pub fn take(&self, frame: &Decoded, spec: PictureSpec) -> Result<Picture, MediaError> {
        if let Some(picture) = cached(frame, spec) {
            return Ok(Picture::clone(&picture));
        }
        self.convert(&frame.frame, spec)
    }

    fn convert(
        &self,
        frame: &ffmpeg::frame::Video,
        spec: PictureSpec,
    ) -> Result<Picture, MediaError> {
        let (width, height) = (spec.width.max(1), spec.height.max(1));
        if spec.filter == Filter::CentreSample
            && spec.format == PictureFormat::Rgb24
            && let Some(data) = centre_sample_rgb(frame, width, height, spec.matrix)
        {
            return Ok(Picture {
                width: width as usize,
                height: height as usize,
                format: spec.format,
                data,
            });
        }
        let colour = colour_key(frame, spec.matrix);
        let rows = match spec.filter {
            Filter::TwoTapShrink | Filter::CentreSample => RowView::of(frame, height),
            _ => None,
        };
        let frame = rows.as_ref().map_or(frame, |view| &view.frame);
        let (w, h, format) = (frame.width(), frame.height(), frame.format());
        let key = (format, w, h, spec, colour);
        let mut scalers = self.scalers.borrow_mut();
        let at = match scalers.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let pixel = match spec.format {
                    PictureFormat::Rgb24 => Pixel::RGB24,
                    PictureFormat::Gray8 => Pixel::GRAY8,
                };
                let mut context = scaling::Context::get(
                    format,
                    w,
                    h,
                    pixel,
                    width,
                    height,
                    spec.filter.flags(),
                )
                .map_err(|e| {
                    decode_error(
                        &self.display,
                        format!(
                            "cannot convert {format:?} {w}x{h} to {pixel:?} {width}x{height}: {e}"
                        ),
                    )
                })?;
                configure(&mut context, colour);
                scalers.push((key, context));
                scalers.len() - 1
            }
        };
        let context = &mut scalers[at].1;
        let mut out = ffmpeg::frame::Video::empty();
        context
            .run(frame, &mut out)
            .map_err(|e| decode_error(&self.display, format!("cannot convert a frame: {e}")))?;
        let bytes = match spec.format {
            PictureFormat::Rgb24 => 3,
            PictureFormat::Gray8 => 1,
        };
        let (rw, rh) = (out.width() as usize, out.height() as usize);
        let stride = out.stride(0);
        let data = out.data(0);
        let mut packed = Vec::with_capacity(rw * rh * bytes);
        for row in 0..rh {
            packed.extend_from_slice(&data[row * stride..row * stride + rw * bytes]);
        }
        Ok(Picture {
            width: rw,
            height: rh,
            format: spec.format,
            data: packed,
        })
    }
}

/// The picture `spec` of `frame`, when a consumer converted it already.
fn cached(frame: &Decoded, spec: PictureSpec) -> Option<Arc<Picture>> {
    frame
        .pictures
        .borrow()
        .iter()
        .find(|(s, _)| *s == spec)
        .map(|(_, picture)| Arc::clone(picture))
}

/// A view of every `step`-th row of a decoded frame: a frame header whose plane pointers
/// and line sizes select the rows, sharing the decoder's buffers (no copy). It lives only
/// while its source frame is borrowed.
struct RowView<'a> {
    frame: ffmpeg::frame::Video,
    _source: std::marker::PhantomData<&'a ffmpeg::frame::Video>,
}

impl<'a> RowView<'a> {
    /// The rows of `source` a shrink to `height` rows reads, when it skips at least every
    /// other row and the pixel format's planes are known; `None`: scale the whole frame.
    fn of(source: &'a ffmpeg::frame::Video, height: u32) -> Option<Self> {
        // planes, and the vertical chroma subsampling (log2) of planes after the first
        let (planes, chroma_shift) = match source.format() {
            Pixel::GRAY8 => (1, 0),
            Pixel::YUV420P | Pixel::YUVJ420P => (3, 1),
            Pixel::YUV422P | Pixel::YUVJ422P | Pixel::YUV444P | Pixel::YUVJ444P => (3, 0),
            Pixel::NV12 | Pixel::NV21 => (2, 1),
            _ => return None,
        };
        let (w, h) = (source.width() as usize, source.height() as usize);
        let step = h / height.max(1) as usize;
        if step < 2 {
            return None;
        }
        // the middle row of each band of `step` rows
        let first = (step - 1) / 2;
        let rows = (h - 1 - first) / step + 1;
        let mut view = ffmpeg::frame::Video::empty();
        // SAFETY: the view's header gets the source's format and size, and plane pointers
        // into the source's buffers at rows that exist: row `first + step * r` of the luma
        // plane for r < rows (at most h - 1), and of a plane subsampled by 2^shift the row
        // `first >> shift` + `step * q` for q < rows >> shift (rounded up), which is at
        // most (h - 1) >> shift. The view holds no buffer reference, so freeing it frees
        // nothing of the source's, and it does not outlive the borrowed source.
        unsafe {
            let src = source.as_ptr();
            let dst = view.as_mut_ptr();
            (*dst).format = (*src).format;
            (*dst).width = w as i32;
            (*dst).height = rows as i32;
            (*dst).color_range = (*src).color_range;
            (*dst).colorspace = (*src).colorspace;
            (*dst).color_primaries = (*src).color_primaries;
            (*dst).color_trc = (*src).color_trc;
            (*dst).chroma_location = (*src).chroma_location;
            for plane in 0..planes {
                let shift = if plane == 0 { 0 } else { chroma_shift };
                let line = (*src).linesize[plane] as isize;
                if line <= 0 || (*src).data[plane].is_null() {
                    return None;
                }
                let offset = ((first >> shift) as isize) * line;
                (*dst).data[plane] = (*src).data[plane].offset(offset);
                (*dst).linesize[plane] = (line * step as isize) as i32;
            }
        }
        Some(Self {
            frame: view,
            _source: std::marker::PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `format` frame of `w` x `h` whose every byte depends on its plane, row and column.
    fn patterned(
        format: Pixel,
        w: u32,
        h: u32,
        rows: impl Fn(usize) -> usize,
    ) -> ffmpeg::frame::Video {
        let mut frame = ffmpeg::frame::Video::new(format, w, h);
        for plane in 0..frame.planes() {
            let (stride, height) = (frame.stride(plane), frame.plane_height(plane) as usize);
            let data = frame.data_mut(plane);
            for row in 0..height {
                let source = rows(row);
                for col in 0..stride {
                    data[row * stride + col] = (source * 7 + col * 3 + plane * 50) as u8;
                }
            }
        }
        frame
    }

    #[test]
    fn two_tap_shrink_reads_the_middle_row_of_each_band() -> Result<(), MediaError> {
        ffmpeg::init().ok();
        let pictures = Pictures::new("test");
        let mut differs = false;
        for (format, planes_subsampled) in [(Pixel::YUV420P, true), (Pixel::YUV444P, false)] {
            // 720 rows to 144: one row in 5, rows 2, 7, 12, ... (chroma 1, 6, 11, ... at 4:2:0)
            let full = Decoded::bare(patterned(format, 64, 720, |r| r));
            let chroma_first = if planes_subsampled { 1 } else { 2 };
            let rows = patterned(format, 64, 144, |r| 2 + 5 * r);
            // the frame built from those rows, its chroma rows fixed up to the source's
            let mut expected = rows;
            if planes_subsampled {
                for plane in 1..3 {
                    let stride = expected.stride(plane);
                    let height = expected.plane_height(plane) as usize;
                    let data = expected.data_mut(plane);
                    for row in 0..height {
                        let source = chroma_first + 5 * row;
                        for col in 0..stride {
                            data[row * stride + col] = (source * 7 + col * 3 + plane * 50) as u8;
                        }
                    }
                }
            }
            let expected = Decoded::bare(expected);
            for out in [PictureFormat::Rgb24, PictureFormat::Gray8] {
                let spec = |filter| PictureSpec {
                    width: 32,
                    height: 144,
                    format: out,
                    filter,
                    matrix: Matrix::Bt601,
                };
                let shrunk = pictures.get(&full, spec(Filter::TwoTapShrink))?;
                let reference = pictures.get(&expected, spec(Filter::FastBilinear))?;
                assert_eq!(shrunk, reference, "{format:?} -> {out:?}");
                // (swscale's fast bilinear reads the same luma rows of the whole frame,
                // not the same chroma rows: the RGB picture tells the two apart)
                let whole = pictures.get(&full, spec(Filter::FastBilinear))?;
                differs |= shrunk != whole;
            }
        }
        assert!(differs, "the row view changed nothing");
        Ok(())
    }
}
