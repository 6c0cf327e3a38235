//! Probe results as Arrow columns.
//!
//! [`probe_fields`] is the single definition of the probe columns: the videos table
//! (`framefusion-catalogs`) and `probe(path)` (`framefusion-udfs`) both build them with
//! [`ProbeColumnsBuilder`], so a column means the same thing everywhere.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{Float64Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_schema::{DataType, Field, Fields};

use crate::probe::ProbeInfo;

/// The probe columns, in table order, all nullable (null when `probe_error` is set).
pub fn probe_fields() -> Fields {
    Fields::from(vec![
        Field::new("container", DataType::Utf8, true),
        Field::new("duration_s", DataType::Float64, true),
        Field::new("bit_rate", DataType::Int64, true),
        Field::new("video_codec", DataType::Utf8, true),
        Field::new("width", DataType::Int32, true),
        Field::new("height", DataType::Int32, true),
        Field::new("fps", DataType::Float64, true),
        Field::new("frame_count", DataType::Int64, true),
        Field::new("pix_fmt", DataType::Utf8, true),
        Field::new("rotation", DataType::Int32, true),
        Field::new("audio_codec", DataType::Utf8, true),
        Field::new("audio_channels", DataType::Int32, true),
        Field::new("audio_sample_rate", DataType::Int32, true),
        Field::new("probe_error", DataType::Utf8, true),
    ])
}

/// Appends probe outcomes row by row and produces the columns of [`probe_fields`].
#[derive(Debug, Default)]
pub struct ProbeColumnsBuilder {
    container: StringBuilder,
    duration_s: Float64Builder,
    bit_rate: Int64Builder,
    video_codec: StringBuilder,
    width: Int32Builder,
    height: Int32Builder,
    fps: Float64Builder,
    frame_count: Int64Builder,
    pix_fmt: StringBuilder,
    rotation: Int32Builder,
    audio_codec: StringBuilder,
    audio_channels: Int32Builder,
    audio_sample_rate: Int32Builder,
    probe_error: StringBuilder,
}

impl ProbeColumnsBuilder {
    /// Appends one row: the facts of a probed file, or its error.
    pub fn append<E: std::fmt::Display>(&mut self, outcome: &Result<ProbeInfo, E>) {
        match outcome {
            Ok(info) => self.append_info(info),
            Err(e) => self.append_error(&e.to_string()),
        }
    }

    /// Appends the facts of a probed file.
    pub fn append_info(&mut self, info: &ProbeInfo) {
        self.container.append_value(&info.container);
        self.duration_s.append_option(info.duration_s);
        self.bit_rate.append_option(info.bit_rate);
        self.video_codec.append_value(&info.video_codec);
        self.width.append_value(info.width);
        self.height.append_value(info.height);
        self.fps.append_option(info.fps);
        self.frame_count.append_option(info.frame_count);
        self.pix_fmt.append_option(info.pix_fmt.as_deref());
        self.rotation.append_value(info.rotation);
        let audio = info.audio.as_ref();
        self.audio_codec
            .append_option(audio.map(|a| a.codec.as_str()));
        self.audio_channels
            .append_option(audio.and_then(|a| a.channels));
        self.audio_sample_rate
            .append_option(audio.and_then(|a| a.sample_rate));
        self.probe_error.append_null();
    }

    /// Appends a row whose probe failed: every column null but `probe_error`.
    pub fn append_error(&mut self, message: &str) {
        self.append_nulls(Some(message));
    }

    /// Appends a row with every column null (the answer for a null input path).
    pub fn append_null(&mut self) {
        self.append_nulls(None);
    }

    fn append_nulls(&mut self, error: Option<&str>) {
        self.container.append_null();
        self.duration_s.append_null();
        self.bit_rate.append_null();
        self.video_codec.append_null();
        self.width.append_null();
        self.height.append_null();
        self.fps.append_null();
        self.frame_count.append_null();
        self.pix_fmt.append_null();
        self.rotation.append_null();
        self.audio_codec.append_null();
        self.audio_channels.append_null();
        self.audio_sample_rate.append_null();
        self.probe_error.append_option(error);
    }

    /// The columns, in the order of [`probe_fields`].
    pub fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.container.finish()),
            Arc::new(self.duration_s.finish()),
            Arc::new(self.bit_rate.finish()),
            Arc::new(self.video_codec.finish()),
            Arc::new(self.width.finish()),
            Arc::new(self.height.finish()),
            Arc::new(self.fps.finish()),
            Arc::new(self.frame_count.finish()),
            Arc::new(self.pix_fmt.finish()),
            Arc::new(self.rotation.finish()),
            Arc::new(self.audio_codec.finish()),
            Arc::new(self.audio_channels.finish()),
            Arc::new(self.audio_sample_rate.finish()),
            Arc::new(self.probe_error.finish()),
        ]
    }
}
