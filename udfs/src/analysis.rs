//! One decode per video per query: what a query asks of each video's frames, computed in
//! one pass and kept for the operators that read it.
//!
//! - A [`Demand`] is what one operator call asks of its video's frames: the content values
//!   of every frame (`detect_shots`), per-frame luma statistics and motion vectors
//!   (`clip_signals` and its views), text coverage of frames sampled at 1 fps
//!   (`text_area_ratio`), faces of sampled frames (`face_stats`), with the parameters that
//!   change the answer (sampling rate, detector size, model, device).
//! - The planner rule of [`crate::plan`] gives every operator call the [`PassSpec`] of its
//!   query: the demands of every call on the same video column.
//! - The first call that needs a video's frames ([`features`]) runs one decode pass
//!   (`framefusion_media::pass`) with a consumer per demand of the spec: over the whole
//!   video when the spec has a whole-video demand (shots), else over the call's range.
//!   The per-frame results ([`Feature`]s) are kept for a few minutes in the runtime's
//!   [`FeatureCache`] ([`CACHE_TTL`], at most [`CACHE_ENTRIES`] passes and
//!   [`CACHE_BYTES`], keyed by URI, store options, and for a local file its size and
//!   modification time); later calls on the same video aggregate them over their own
//!   ranges instead of decoding again. The cache is the runtime's (kept in its
//!   `framefusion_common::shared::Shared` handles: an embedded session's, a server's
//!   sessions', an executor's tasks'), not the process's.
//!
//! So `detect_shots` followed by `motion_score`, `clip_quality` and `text_area_ratio` per
//! shot decodes each video once, and two signals of the same clip share one pass even
//! without shots. A call whose spec is missing (a plan built without the rule) computes
//! its own demand alone, one pass per call, as operators did before the rule.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::common::config::ConfigOptions;
use framefusion_media::pass::{FrameConsumer, PassOptions, Selection, run_pass};
use framefusion_media::source::VideoSource;
use framefusion_media::storage::StorageOptions;
use serde::{Deserialize, Serialize};

use crate::UdfError;
pub use crate::features::{Feature, Kind};

/// What one operator call asks of its video's frames (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Demand {
    /// What it computes, with everything that changes the answer.
    pub need: Need,
    /// Whether it covers the whole video (shots) rather than the call's range.
    pub whole: bool,
    /// Whether its consumer needs the codec's motion vectors.
    pub motion_vectors: bool,
    /// Which frames its consumer needs decoded.
    pub frames: Frames,
}

/// The per-frame results a pass can compute, one variant per kind, with the parameters
/// that change them: the operator that asks and the consumer that computes agree on it by
/// the compiler, not by names and strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Need {
    /// `detect_shots`' content values of every frame, or of the anchor frames with a
    /// second look (`fast`).
    Content {
        /// Fast mode.
        fast: bool,
    },
    /// `clip_signals`' per-frame luma statistics at `side` pixels, with motion vectors.
    Signals {
        /// The longer side of the luma picture.
        side: u32,
    },
    /// `text_area_ratio`'s text coverage of sampled frames.
    Text {
        /// The detector's input size (`min:736`, `max:960`).
        limit: String,
        /// The detection model file.
        model: String,
        /// The execution provider.
        device: String,
    },
    /// `face_stats`' faces of sampled frames.
    Faces {
        /// The sampling rate, exactly as asked.
        fps: Rate,
        /// The folder of the MTCNN models.
        models: String,
        /// The execution provider.
        device: String,
    },
}

impl Need {
    /// The operator whose consumer computes it ([`crate::VideoOperator::consumer`]).
    pub fn operator(&self) -> &'static str {
        match self {
            Need::Content { .. } => "detect_shots",
            Need::Signals { .. } => "clip_signals",
            Need::Text { .. } => "text_area_ratio",
            Need::Faces { .. } => "face_stats",
        }
    }

    /// Whether `feature` is of the kind this need computes.
    pub fn answered_by(&self, feature: &Feature) -> bool {
        self.kind() == feature.kind()
    }

    /// The kind of feature that answers it.
    pub fn kind(&self) -> Kind {
        match self {
            Need::Content { .. } => Kind::Content,
            Need::Signals { .. } => Kind::Signals,
            Need::Text { .. } => Kind::Text,
            Need::Faces { .. } => Kind::Faces,
        }
    }
}

/// A rate (frames per second) in a [`Need`], exactly as asked: the bits of an `f64`, so
/// that needs compare and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rate(u64);

impl Rate {
    /// The rate `fps`.
    pub fn new(fps: f64) -> Self {
        Self(fps.to_bits())
    }

    /// Frames per second.
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

/// Which frames a demand's consumer needs decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Frames {
    /// Every frame.
    Every,
    /// The frames sampling at this many thousandths of a frame per second shows.
    Sampled(u32),
    /// Intra and predicted frames (a cheap look).
    Anchors,
}

impl Frames {
    /// The frames of sampling at `fps` (every frame for 0 or less).
    pub fn sampled(fps: f64) -> Self {
        if fps > 0.0 && fps.is_finite() {
            Frames::Sampled((fps * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32)
        } else {
            Frames::Every
        }
    }
}

impl Demand {
    /// A demand for `need`, over a range, every frame, no motion vectors.
    pub fn new(need: Need) -> Self {
        Self {
            need,
            whole: false,
            motion_vectors: false,
            frames: Frames::Every,
        }
    }

    /// The operator whose consumer computes it.
    pub fn operator(&self) -> &'static str {
        self.need.operator()
    }
}

/// The demands of a query on one video column, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PassSpec {
    /// The demands.
    pub demands: Vec<Demand>,
}

impl PassSpec {
    /// The spec of `demands`.
    pub fn new(mut demands: Vec<Demand>) -> Self {
        demands.sort();
        demands.dedup();
        Self { demands }
    }

    /// Whether a demand covers the whole video.
    pub fn has_whole(&self) -> bool {
        self.demands.iter().any(|d| d.whole)
    }
}

/// A consumer of a decode pass that computes one [`Demand`] into a [`Feature`].
pub trait FeatureConsumer: FrameConsumer + Send {
    /// The computed feature, once the pass is over.
    fn into_feature(self: Box<Self>) -> Feature;
}

/// How long a pass's features are kept.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How many passes' features are kept at most.
pub const CACHE_ENTRIES: usize = 64;
/// How many bytes of features are kept at most (a pass's features larger than this are
/// not kept).
pub const CACHE_BYTES: usize = 256 << 20;

/// A video's identity: URI, store options, and for a local file its size and mtime.
type VideoKey = (String, StorageOptions, Option<(u64, u128)>);

struct Entry {
    video: VideoKey,
    range: Option<(f64, f64)>,
    features: HashMap<Demand, Feature>,
    bytes: usize,
    at: Instant,
}

impl Entry {
    fn covers(&self, video: &VideoKey, range: Option<(f64, f64)>, demand: &Demand) -> bool {
        let range_ok = match (self.range, range) {
            (None, _) => true,
            (Some((a, b)), Some((c, d))) => a <= c && d <= b,
            (Some(_), None) => false,
        };
        &self.video == video
            && range_ok
            && self.at.elapsed() < CACHE_TTL
            && self.features.contains_key(demand)
    }
}

/// The features of recent passes one runtime keeps (see the module docs): at most
/// [`CACHE_ENTRIES`] passes and [`CACHE_BYTES`], each for [`CACHE_TTL`].
#[derive(Default)]
pub struct FeatureCache {
    entries: Mutex<VecDeque<Entry>>,
}

impl FeatureCache {
    /// The cache of the runtime whose session `config` is (an empty one for this call
    /// when the configuration carries no shared handles).
    pub fn of(config: &ConfigOptions) -> Arc<Self> {
        framefusion_common::shared::Shared::of(config).slot::<Self>()
    }

    /// The passes whose features the cache keeps now, and their bytes (at most
    /// [`CACHE_ENTRIES`] and [`CACHE_BYTES`]).
    pub fn size(&self) -> (usize, usize) {
        self.entries.lock().map_or((0, 0), |cache| {
            (cache.len(), cache.iter().map(|e| e.bytes).sum())
        })
    }

    fn get(&self, video: &VideoKey, range: Option<(f64, f64)>, demand: &Demand) -> Option<Feature> {
        let cache = self.entries.lock().ok()?;
        cache
            .iter()
            .rev()
            .find(|e| e.covers(video, range, demand))
            .and_then(|e| e.features.get(demand).cloned())
    }

    /// Keeps a pass's features, forgetting the oldest beyond the bounds.
    fn keep(&self, entry: Entry) {
        let Ok(mut cache) = self.entries.lock() else {
            return;
        };
        cache.retain(|e| e.at.elapsed() < CACHE_TTL);
        if entry.bytes <= CACHE_BYTES {
            cache.push_back(entry);
        }
        let mut held: usize = cache.iter().map(|e| e.bytes).sum();
        while cache.len() > CACHE_ENTRIES || held > CACHE_BYTES {
            let Some(oldest) = cache.pop_front() else {
                break;
            };
            held -= oldest.bytes;
        }
    }
}

/// The feature `demand` of the video at `source` over `range` (`None`: the whole video),
/// from a pass already run for this query or from a new one computing every demand of
/// `pass` (see the module docs).
pub fn features(
    source: &VideoSource,
    storage: &StorageOptions,
    range: Option<(f64, f64)>,
    demand: &Demand,
    pass: Option<&Arc<PassSpec>>,
    config: &ConfigOptions,
) -> Result<Feature, UdfError> {
    let video: VideoKey = (source.uri(), storage.clone(), source.local_stamp());
    let cache = FeatureCache::of(config);
    if let Some(feature) = cache.get(&video, range, demand) {
        return Ok(feature);
    }
    // what the pass computes: the whole video when the query asks a whole-video demand
    // of it, else this call's range; every demand of the query that the pass can serve
    let spec = pass.map(|p| p.demands.clone()).unwrap_or_default();
    let whole = demand.whole || spec.iter().any(|d| d.whole) || range.is_none();
    let mut demands: Vec<Demand> = spec.into_iter().filter(|d| whole || !d.whole).collect();
    if !demands.contains(demand) {
        demands.push(demand.clone());
    }
    let pass_range = if whole { None } else { range };
    let (computed, bytes) = compute(source, storage, pass_range, &demands, config)?;
    let feature = computed.get(demand).cloned().ok_or_else(|| {
        UdfError::Option(format!(
            "the decode pass did not compute {} for {}",
            demand.need.kind(),
            demand.operator()
        ))
    })?;
    cache.keep(Entry {
        video,
        range: pass_range,
        features: computed,
        bytes,
        at: Instant::now(),
    });
    Ok(feature)
}

/// The frames a pass decodes for `demands`: every frame when one needs it or when they
/// need different frames, else what they all need.
fn selection(demands: &[Demand]) -> Selection {
    let mut kinds = demands.iter().map(|d| d.frames);
    let Some(first) = kinds.next() else {
        return Selection::All;
    };
    if kinds.any(|k| k != first) {
        return Selection::All;
    }
    match first {
        Frames::Every => Selection::All,
        Frames::Sampled(milli) => Selection::Sampled(f64::from(milli) / 1000.0),
        Frames::Anchors => Selection::Anchors,
    }
}

/// Runs one pass computing `demands`.
fn compute(
    source: &VideoSource,
    storage: &StorageOptions,
    range: Option<(f64, f64)>,
    demands: &[Demand],
    config: &ConfigOptions,
) -> Result<(HashMap<Demand, Feature>, usize), UdfError> {
    let mut consumers: Vec<Box<dyn FeatureConsumer>> = Vec::with_capacity(demands.len());
    for demand in demands {
        let op = crate::operators()
            .into_iter()
            .find(|op| op.name() == demand.operator())
            .ok_or_else(|| {
                UdfError::Setup(format!(
                    "no operator '{}' computes {} (a plan from another framefusion version?)",
                    demand.operator(),
                    demand.need.kind()
                ))
            })?;
        let models = crate::models::Models::load(
            op.models(),
            &crate::models::OnnxOptions::from_config(config),
        )?;
        consumers.push(op.consumer(demand, &models, config)?);
    }
    let options = PassOptions {
        range,
        motion_vectors: demands.iter().any(|d| d.motion_vectors),
        selection: selection(demands),
    };
    let input = source.media_input(storage)?;
    {
        let mut refs: Vec<&mut dyn FrameConsumer> = consumers
            .iter_mut()
            .map(|c| c.as_mut() as &mut dyn FrameConsumer)
            .collect();
        let stats = run_pass(&input, &options, &mut refs)?;
        for (demand, seconds) in demands.iter().zip(&stats.consumer_seconds) {
            framefusion_media::metrics::operator_seconds(demand.operator(), *seconds);
        }
    }
    let features: HashMap<Demand, Feature> = demands
        .iter()
        .cloned()
        .zip(consumers.into_iter().map(FeatureConsumer::into_feature))
        .collect();
    if let Some((demand, feature)) = features.iter().find(|(d, f)| !d.need.answered_by(f)) {
        return Err(UdfError::Setup(format!(
            "{}'s consumer computed {} where its call needs {}",
            demand.operator(),
            feature.kind(),
            demand.need.kind()
        )));
    }
    let bytes = features.values().map(Feature::bytes).sum();
    Ok((features, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_canonical() {
        let a = Demand::new(Need::Text {
            limit: "min:736".into(),
            model: "det.onnx".into(),
            device: "cpu".into(),
        });
        let b = Demand {
            whole: true,
            ..Demand::new(Need::Content { fast: false })
        };
        let spec = PassSpec::new(vec![a.clone(), b.clone(), a.clone()]);
        assert_eq!(spec, PassSpec::new(vec![b, a.clone()]));
        assert_eq!(spec.demands.len(), 2);
        assert!(spec.has_whole());
        assert_eq!(a.operator(), "text_area_ratio");
        // demands travel between processes
        let json = serde_json::to_string(&spec).unwrap_or_default();
        assert_eq!(serde_json::from_str::<PassSpec>(&json).ok(), Some(spec));
    }
}
