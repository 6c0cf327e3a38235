//! JPEG encoding of RGB pictures through ffmpeg's own MJPEG encoder (already linked for
//! decoding; no second image library), for the previews (`thumbnail`, `contact_sheet`).
//!
//! The picture is converted to full-range YUV 4:2:0 with BT.601 coefficients (JFIF's
//! definition, what every JPEG reader assumes) by swscale, then encoded at a fixed
//! quantiser: `quality` 1..=31 as ffmpeg's `-q:v` (2 is near-lossless, 31 the smallest
//! file).

use crate::MediaError;
use crate::ffmpeg::{self, codec, format::Pixel, software::scaling};
use crate::image::Rgb;

/// The quantiser previews are encoded at unless asked otherwise (`ffmpeg -q:v 4`).
pub const DEFAULT_QUALITY: u8 = 4;

fn jpeg_error(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Decode {
        path: "(JPEG encoder)".to_owned(),
        message: format!("{what}: {e}"),
    }
}

/// `picture` as a baseline JPEG file at `quality` (1..=31, lower is better; clamped).
pub fn encode_jpeg(picture: &Rgb, quality: u8) -> Result<Vec<u8>, MediaError> {
    let (width, height) = (picture.width as u32, picture.height as u32);
    if width == 0 || height == 0 || picture.data.len() < picture.width * picture.height * 3 {
        return Err(jpeg_error(
            "empty picture",
            format!("{width}x{height} with {} bytes", picture.data.len()),
        ));
    }
    crate::init()?;
    let codec = ffmpeg::encoder::find(codec::Id::MJPEG)
        .ok_or_else(|| jpeg_error("ffmpeg has no MJPEG encoder", "rebuild it with mjpeg"))?;
    let mut encoder = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| jpeg_error("cannot set up the MJPEG encoder", e))?;
    encoder.set_width(width);
    encoder.set_height(height);
    encoder.set_format(Pixel::YUVJ420P);
    encoder.set_time_base((1, 25));
    encoder.set_color_range(ffmpeg::color::Range::JPEG);
    let lambda = i32::from(quality.clamp(1, 31)) * ffmpeg::ffi::FF_QP2LAMBDA;
    encoder.set_flags(codec::Flags::QSCALE);
    encoder.set_global_quality(lambda);
    let mut encoder = encoder
        .open_as(codec)
        .map_err(|e| jpeg_error("cannot open the MJPEG encoder", e))?;

    let mut rgb = ffmpeg::frame::Video::new(Pixel::RGB24, width, height);
    let stride = rgb.stride(0);
    let row = picture.width * 3;
    for (y, line) in picture
        .data
        .chunks_exact(row)
        .take(picture.height)
        .enumerate()
    {
        rgb.data_mut(0)[y * stride..y * stride + row].copy_from_slice(line);
    }
    let mut yuv = ffmpeg::frame::Video::new(Pixel::YUVJ420P, width, height);
    let mut scaler = scaling::Context::get(
        Pixel::RGB24,
        width,
        height,
        Pixel::YUVJ420P,
        width,
        height,
        scaling::Flags::BICUBIC | scaling::Flags::ACCURATE_RND | scaling::Flags::FULL_CHR_H_INT,
    )
    .map_err(|e| jpeg_error("cannot convert the picture to YUV", e))?;
    scaler
        .run(&rgb, &mut yuv)
        .map_err(|e| jpeg_error("cannot convert the picture to YUV", e))?;
    yuv.set_pts(Some(0));
    // SAFETY: a plain field write on a frame this function owns; the encoder reads the
    // frame's quality as its quantiser when QSCALE is set (as `ffmpeg -q:v` sets it).
    unsafe {
        (*yuv.as_mut_ptr()).quality = lambda;
    }
    encoder
        .send_frame(&yuv)
        .map_err(|e| jpeg_error("MJPEG encoding failed", e))?;
    encoder
        .send_eof()
        .map_err(|e| jpeg_error("MJPEG encoding failed", e))?;
    let mut packet = ffmpeg::Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(|e| jpeg_error("MJPEG encoding gave no picture", e))?;
    Ok(packet.data().unwrap_or_default().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_jpeg_and_refuses_an_empty_picture() {
        let picture = Rgb {
            width: 64,
            height: 48,
            data: (0..64 * 48 * 3).map(|i| (i % 251) as u8).collect(),
        };
        let jpeg = encode_jpeg(&picture, DEFAULT_QUALITY).expect("encodes");
        // SOI ... EOI
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
        let smaller = encode_jpeg(&picture, 31).expect("encodes");
        assert!(
            smaller.len() < jpeg.len(),
            "{} vs {}",
            smaller.len(),
            jpeg.len()
        );
        let empty = Rgb {
            width: 0,
            height: 0,
            data: Vec::new(),
        };
        assert!(encode_jpeg(&empty, 4).is_err());
    }
}
