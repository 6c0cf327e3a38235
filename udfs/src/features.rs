//! The per-frame results a decode pass computes ([`Feature`]), one variant per kind of
//! [`crate::analysis::Need`]: the consumer that computes a need and the operator that reads
//! it agree on the type by the compiler. The types are plain data; the operators that
//! compute and read them (`shots`, `signals`, `text`, `faces`) implement their methods.

use std::sync::Arc;

use framefusion_media::decode::FrameMotion;

use crate::UdfError;
use crate::nets::mtcnn::Face;

/// A computed demand: the per-frame results of one kind, shared by the calls that read it.
#[derive(Debug, Clone)]
pub enum Feature {
    /// `detect_shots`' content values ([`crate::analysis::Need::Content`]).
    Content(Arc<ContentScores>),
    /// `clip_signals`' per-frame statistics ([`crate::analysis::Need::Signals`]).
    Signals(Arc<SignalFrames>),
    /// `text_area_ratio`'s text coverage ([`crate::analysis::Need::Text`]).
    Text(Arc<TextSamples>),
    /// `face_stats`' faces ([`crate::analysis::Need::Faces`]).
    Faces(Arc<FaceSamples>),
}

/// The kinds of [`Feature`], and of the [`crate::analysis::Need`]s they answer: one name
/// each, for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Feature::Content`].
    Content,
    /// [`Feature::Signals`].
    Signals,
    /// [`Feature::Text`].
    Text,
    /// [`Feature::Faces`].
    Faces,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Content => "content values",
            Kind::Signals => "clip signals",
            Kind::Text => "text coverage",
            Kind::Faces => "faces",
        })
    }
}

impl Feature {
    /// What it holds.
    pub fn kind(&self) -> Kind {
        match self {
            Feature::Content(_) => Kind::Content,
            Feature::Signals(_) => Kind::Signals,
            Feature::Text(_) => Kind::Text,
            Feature::Faces(_) => Kind::Faces,
        }
    }

    /// The content values, or the error of a pass that computed another kind.
    pub fn content(self) -> Result<Arc<ContentScores>, UdfError> {
        match self {
            Feature::Content(c) => Ok(c),
            other => Err(other.not(Kind::Content)),
        }
    }

    /// The per-frame statistics, or the error of a pass that computed another kind.
    pub fn signals(self) -> Result<Arc<SignalFrames>, UdfError> {
        match self {
            Feature::Signals(s) => Ok(s),
            other => Err(other.not(Kind::Signals)),
        }
    }

    /// The text samples, or the error of a pass that computed another kind.
    pub fn text(self) -> Result<Arc<TextSamples>, UdfError> {
        match self {
            Feature::Text(t) => Ok(t),
            other => Err(other.not(Kind::Text)),
        }
    }

    /// The face samples, or the error of a pass that computed another kind.
    pub fn faces(self) -> Result<Arc<FaceSamples>, UdfError> {
        match self {
            Feature::Faces(f) => Ok(f),
            other => Err(other.not(Kind::Faces)),
        }
    }

    fn not(&self, wanted: Kind) -> UdfError {
        UdfError::Setup(format!(
            "a decode pass computed {} where {wanted} were asked (a consumer that does not compute its operator's need)",
            self.kind()
        ))
    }

    /// The bytes it holds (about: its per-frame results), for the feature cache's bound.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        match self {
            Feature::Content(c) => {
                (c.scores.len() + c.times.len()) * size_of::<f64>()
                    + c.frames.len() * size_of::<i64>()
            }
            Feature::Signals(s) => s.0.len() * size_of::<FrameStats>(),
            Feature::Text(t) => t.0.len() * size_of::<TextSample>(),
            Feature::Faces(f) => f.0.len() * size_of::<FrameFaces>(),
        }
    }
}

/// The content value of the frames of a video, with their times: what `detect_shots`
/// computes during a decode pass, whatever its threshold or detector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentScores {
    /// Content value of each scored frame against the one scored before it (0 for the
    /// first).
    pub scores: Vec<f64>,
    /// Presentation time of each scored frame, in seconds.
    pub times: Vec<f64>,
    /// Number of each scored frame (every frame: 0, 1, 2, ...).
    pub frames: Vec<i64>,
    /// Frames in the video.
    pub frame_count: i64,
}

/// What the clip signals need of one frame, computed during the decode pass.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameStats {
    /// Presentation time in seconds.
    pub pts_s: f64,
    /// Whether the frame is a keyframe.
    pub is_keyframe: bool,
    /// The codec's motion vectors, summarised.
    pub motion: Option<FrameMotion>,
    /// Mean luma.
    pub mean: f64,
    /// Standard deviation of the luma.
    pub std: f64,
    /// Variance of the Laplacian of the luma.
    pub laplacian: f64,
    /// Whether at least 98% of the pixels are black.
    pub black: bool,
    /// Mean absolute luma difference to the frame before it in the pass, if any.
    pub diff_prev: Option<f64>,
    /// The frame's perceptual hash.
    pub phash: u64,
}

/// The per-frame statistics of a pass, in presentation order: the `signals` feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalFrames(pub Vec<FrameStats>);

/// One frame sampled for text: when it is shown, for how many output slots, and the share
/// of it text covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextSample {
    /// Presentation time of the frame, seconds.
    pub pts_s: f64,
    /// Output slots (of the sampling rate) the frame shows.
    pub slots: usize,
    /// Share of the frame covered by text boxes.
    pub fraction: f64,
}

/// The text samples of a pass, in presentation order: the `text` feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextSamples(pub Vec<TextSample>);

/// One sampled frame of a range: its time, face count and largest face.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFaces {
    /// Presentation time in seconds.
    pub t_s: f64,
    /// Faces found.
    pub faces: usize,
    /// The largest face (by box area).
    pub largest: Option<Face>,
    /// Frame width and height.
    pub size: (usize, usize),
}

/// The face samples of a pass, in presentation order: the `faces` feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceSamples(pub Vec<FrameFaces>);
