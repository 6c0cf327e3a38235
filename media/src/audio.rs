//! Audio: a video's sound track decoded and resampled to mono f32 at a given rate (what
//! speech models take).

use crate::MediaError;
use crate::ffmpeg;
use crate::source::MediaInput;

fn audio_error(media: &MediaInput, e: impl std::fmt::Display) -> MediaError {
    MediaError::Decode {
        path: media.display.clone(),
        message: format!("audio: {e}"),
    }
}

/// The samples of `media`'s best audio stream in `[start_s, end_s)` (the whole track when
/// `range` is None), mixed to mono and resampled to `rate` Hz; `None` when the file has no
/// audio stream.
pub fn decode_audio(
    media: &MediaInput,
    range: Option<(f64, f64)>,
    rate: u32,
) -> Result<Option<Vec<f32>>, MediaError> {
    crate::init()?;
    let mut input = media.open().map_err(|e| audio_error(media, e))?;
    let Some(stream) = input.streams().best(ffmpeg::media::Type::Audio) else {
        return Ok(None);
    };
    let index = stream.index();
    let time_base = f64::from(stream.time_base());
    let start_pts = stream.start_time().max(0);
    let context = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| audio_error(media, e))?;
    let mut decoder = context
        .decoder()
        .audio()
        .map_err(|e| audio_error(media, e))?;
    let mut resampler: Option<ffmpeg::software::resampling::Context> = None;
    let mut samples: Vec<f32> = Vec::new();
    let mut first_s: Option<f64> = None;
    let end_s = range.map_or(f64::INFINITY, |(_, e)| e);
    let mut frame = ffmpeg::frame::Audio::empty();
    let mut out = ffmpeg::frame::Audio::empty();
    let mut drain = |decoder: &mut ffmpeg::decoder::Audio,
                     resampler: &mut Option<ffmpeg::software::resampling::Context>,
                     samples: &mut Vec<f32>,
                     first_s: &mut Option<f64>|
     -> Result<bool, MediaError> {
        while decoder.receive_frame(&mut frame).is_ok() {
            if first_s.is_none() {
                let pts = frame.pts().unwrap_or(start_pts) - start_pts;
                *first_s = Some(pts as f64 * time_base);
            }
            if resampler.is_none() {
                let layout = if frame.channel_layout().is_empty() {
                    ffmpeg::ChannelLayout::default(i32::from(frame.channels()))
                } else {
                    frame.channel_layout()
                };
                *resampler = Some(
                    ffmpeg::software::resampling::Context::get(
                        frame.format(),
                        layout,
                        frame.rate(),
                        ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Packed),
                        ffmpeg::ChannelLayout::MONO,
                        rate,
                    )
                    .map_err(|e| audio_error(media, e))?,
                );
            }
            if frame.channel_layout().is_empty() {
                frame.set_channel_layout(ffmpeg::ChannelLayout::default(i32::from(
                    frame.channels(),
                )));
            }
            if let Some(r) = resampler.as_mut() {
                r.run(&frame, &mut out).map_err(|e| audio_error(media, e))?;
                samples.extend_from_slice(&out.plane::<f32>(0)[..out.samples()]);
            }
            let decoded_s = first_s.unwrap_or(0.0) + samples.len() as f64 / f64::from(rate);
            if decoded_s >= end_s {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let mut done = false;
    let mut damaged = 0usize;
    let mut last_damage = None;
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        if let Err(e) = decoder.send_packet(&packet) {
            // a damaged packet (a truncated last frame, a corrupt one in the middle): skip
            // it and go on, as ffmpeg does; a track that yields nothing is an error below
            log::warn!(
                "{}: audio: skipping a packet the decoder refused: {e}",
                media.display
            );
            damaged += 1;
            last_damage = Some(e);
            continue;
        }
        if drain(&mut decoder, &mut resampler, &mut samples, &mut first_s)? {
            done = true;
            break;
        }
    }
    if !done {
        let _ = decoder.send_eof();
        drain(&mut decoder, &mut resampler, &mut samples, &mut first_s)?;
        if let Some(r) = resampler.as_mut() {
            while let Ok(Some(_)) = r.flush(&mut out) {
                if out.samples() == 0 {
                    break;
                }
                samples.extend_from_slice(&out.plane::<f32>(0)[..out.samples()]);
            }
        }
    }
    if samples.is_empty()
        && let Some(e) = last_damage
    {
        return Err(audio_error(
            media,
            format!("no packet of the track decodes ({damaged} refused; the last: {e})"),
        ));
    }
    // the samples start at `first_s`; keep [start_s, end_s)
    let offset_s = first_s.unwrap_or(0.0);
    let (from_s, to_s) = range.unwrap_or((0.0, f64::INFINITY));
    let at = |t: f64| -> usize {
        let i = ((t - offset_s) * f64::from(rate)).round();
        if i <= 0.0 {
            0
        } else {
            (i as usize).min(samples.len())
        }
    };
    let (a, b) = (
        at(from_s),
        if to_s.is_finite() {
            at(to_s)
        } else {
            samples.len()
        },
    );
    Ok(Some(samples[a..b.max(a)].to_vec()))
}
