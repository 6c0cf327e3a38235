//! YUV to RGB in ffmpeg's terms: the matrix and range a frame is tagged with.
//!
//! ffmpeg's `scale` filter (which `ffmpeg -pix_fmt rgb24` inserts) reads each frame's
//! colour tags (`in_color_matrix=auto`, `in_range=auto`): a bt709-tagged H.264 frame is
//! converted with BT.709 coefficients, a full-range ("pc") frame without expanding its
//! levels. A swscale context left at its defaults uses BT.601 and the range the pixel
//! format implies (`yuvj*` full, others limited), which is what OpenCV's `VideoCapture`
//! gives. [`Matrix::Tagged`] follows ffmpeg (so models and hashes see the colours every
//! reference tool shows); [`Matrix::Bt601`] follows OpenCV, for the consumers whose
//! values must equal a tool that converts that way (PySceneDetect's content values).

use crate::ffmpeg::{self, software::scaling};

/// Which YUV matrix and range a conversion to RGB uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Matrix {
    /// The frame's tags, as ffmpeg's `scale` filter: BT.601 when untagged or tagged with a
    /// matrix swscale has no coefficients for.
    #[default]
    Tagged,
    /// BT.601 and the pixel format's range, whatever the tags (OpenCV's `VideoCapture`).
    Bt601,
}

/// What a conversion of `frame` depends on beyond its size and pixel format: the
/// coefficient set (swscale's `SWS_CS_*`, the same numbers as `AVColorSpace`) and a
/// range override (`Some(true)`: full). `None` for [`Matrix::Bt601`]: swscale's defaults.
pub(crate) type ColourKey = Option<(i32, Option<bool>)>;

/// The [`ColourKey`] of `frame` under `matrix`.
pub(crate) fn colour_key(frame: &ffmpeg::frame::Video, matrix: Matrix) -> ColourKey {
    if matrix == Matrix::Bt601 {
        return None;
    }
    // SAFETY: plain field reads of a frame the decoder filled.
    let (space, range) = unsafe {
        let f = frame.as_ptr();
        ((*f).colorspace as i32, (*f).color_range)
    };
    // as the `scale` filter's parse_yuv_type: unknown or unsupported matrices are BT.601
    // (SWS_CS_ITU601 = AVCOL_SPC_BT470BG = 5)
    let space = if (1..=10).contains(&space) && space != 8 {
        space
    } else {
        5
    };
    let full = match range {
        ffmpeg::ffi::AVColorRange::AVCOL_RANGE_JPEG => Some(true),
        ffmpeg::ffi::AVColorRange::AVCOL_RANGE_MPEG => Some(false),
        _ => None,
    };
    Some((space, full))
}

/// Sets `context`'s input matrix and range to `key` (as the `scale` filter does before
/// each conversion); the output keeps swscale's own range (RGB is always full).
pub(crate) fn configure(context: &mut scaling::Context, key: ColourKey) {
    let Some((space, full)) = key else {
        return;
    };
    // SAFETY: the context is a valid, initialised SwsContext owned by `context`; the
    // coefficient table sws_getCoefficients returns is static; the out-pointers of
    // sws_getColorspaceDetails point to locals.
    unsafe {
        let ctx = context.as_mut_ptr();
        let (mut inv, mut table) = (std::ptr::null_mut(), std::ptr::null_mut());
        let (mut src_range, mut dst_range) = (0, 0);
        let (mut brightness, mut contrast, mut saturation) = (0, 0, 0);
        if ffmpeg::ffi::sws_getColorspaceDetails(
            ctx,
            &mut inv,
            &mut src_range,
            &mut table,
            &mut dst_range,
            &mut brightness,
            &mut contrast,
            &mut saturation,
        ) < 0
        {
            // a conversion without YUV tables (RGB to RGB): nothing to set
            return;
        }
        let coefficients = ffmpeg::ffi::sws_getCoefficients(space);
        let src_range = full.map_or(src_range, i32::from);
        ffmpeg::ffi::sws_setColorspaceDetails(
            ctx,
            coefficients,
            src_range,
            coefficients,
            dst_range,
            brightness,
            contrast,
            saturation,
        );
    }
}
