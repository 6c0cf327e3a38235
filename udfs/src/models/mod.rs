//! The ONNX model runtime: ONNX Runtime loaded once per process from the library the setup
//! step installs (`ort` with `load-dynamic`), each model loaded once per process and device
//! (a cache), inference off the async threads, the device from `onnx.device` with a CPU
//! fallback said once.
//!
//! - [`OnnxOptions`]: the `onnx.*` settings.
//! - [`model`]: a loaded model, from the cache.
//! - [`user`]: ONNX files registered as SQL functions (`CREATE FUNCTION ... LANGUAGE onnx`).

pub mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use datafusion::common::config::ConfigExtension;
use datafusion::common::config_namespace;
use ort::session::Session;

use crate::UdfError;

config_namespace! {
    /// Options of the model-backed operators (`onnx.*`).
    pub struct OnnxOptions {
        /// `auto` (CUDA when ONNX Runtime can use it, else CPU), `cpu`, `cuda` or `cuda:N`.
        /// CUDA asked for but unavailable falls back to CPU, with one warning per process.
        pub device: String, default = "auto".to_owned()
        /// Frames per inference call: frames of several rows are batched up to this many.
        pub batch_size: usize, default = 8
        /// Where model files named without a folder are found (empty:
        /// `$FRAMEFUSION_HOME/models`, filled by scripts/setup.sh).
        pub model_dir: String, default = String::new()
        /// The ONNX Runtime shared library (empty: `$ORT_DYLIB_PATH`, else
        /// `$FRAMEFUSION_HOME/lib/libonnxruntime.so`, installed by scripts/setup.sh).
        pub library: String, default = String::new()
        /// The text detector's input size: `min:736` (RapidOCR's: the shorter side scaled
        /// up to at least 736 pixels) or `max:N` (the longer side scaled down to at most N,
        /// `max:960` for about twice the speed).
        pub text_det_limit: String, default = "min:736".to_owned()
    }
}

framefusion_common::prefixed_extension!(OnnxOptions);

impl ConfigExtension for OnnxOptions {
    const PREFIX: &'static str = "onnx";
}

pub use framefusion_media::framefusion_home;

impl OnnxOptions {
    /// The `onnx.*` settings of a session (the defaults where it has none).
    pub fn from_config(config: &datafusion::common::config::ConfigOptions) -> Self {
        config.extensions.get::<Self>().cloned().unwrap_or_default()
    }

    /// The model directory.
    pub fn model_dir(&self) -> PathBuf {
        if self.model_dir.is_empty() {
            framefusion_home().join("models")
        } else {
            PathBuf::from(&self.model_dir)
        }
    }

    /// The ONNX Runtime library.
    pub fn library(&self) -> PathBuf {
        if !self.library.is_empty() {
            return PathBuf::from(&self.library);
        }
        std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| framefusion_home().join("lib/libonnxruntime.so"))
    }

    /// Frames per inference call for `model`: one on the CPU (batching measured slower
    /// there for the text detector: benches/RESULTS.md), `onnx.batch_size` on CUDA.
    pub fn frames_per_call(&self, model: &LoadedModel) -> usize {
        match model.device {
            Device::Cpu => 1,
            Device::Cuda(_) => self.batch_size.max(1),
        }
    }

    /// A model file: as given when it has a folder, else in the model directory.
    pub fn model_path(&self, model: &str) -> PathBuf {
        let path = Path::new(model);
        if path.is_absolute() || model.contains('/') {
            path.to_path_buf()
        } else {
            self.model_dir().join(model)
        }
    }
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA device.
    Cuda(i32),
}

impl Device {
    /// Parses `onnx.device`; `auto` is CUDA device 0 when the runtime offers CUDA.
    pub fn parse(text: &str) -> Result<Self, UdfError> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(if cuda_available() {
                Self::Cuda(0)
            } else {
                Self::Cpu
            }),
            "cuda" => Ok(Self::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    UdfError::Setup(format!(
                        "onnx.device = '{text}': use auto, cpu, cuda or cuda:N"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

fn cuda_available() -> bool {
    use ort::ep::ExecutionProvider;
    ort::ep::CUDA::is_available().unwrap_or(false)
}

/// Whether ONNX Runtime's threads spin while waiting for work (`FRAMEFUSION_ORT_SPIN=1`;
/// off by default: spinning threads take the cores decoders need between calls).
fn spinning() -> bool {
    std::env::var("FRAMEFUSION_ORT_SPIN").is_ok_and(|v| v == "1")
}

/// The ONNX Runtime environment, kept for the life of the process.
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library` (once per process) and returns its environment.
pub fn ensure_runtime(library: &Path) -> Result<&'static ort::environment::Environment, UdfError> {
    let outcome = RUNTIME.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "the ONNX Runtime library is missing at '{}'; run scripts/setup.sh (make setup), or set onnx.library / ORT_DYLIB_PATH",
                library.display()
            ));
        }
        let builder = ort::init_from(library)
            .map_err(|e| format!("cannot load ONNX Runtime from '{}': {e}", library.display()))?;
        // one intra-op pool for every session, sized by the process's CPU budget, its
        // threads not spinning between calls (they would take the cores from the decoders)
        let threads = framefusion_media::cpu::budget().inference_threads();
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(threads)
            .and_then(|p| p.with_inter_threads(1))
            .and_then(|p| p.with_spin_control(spinning()))
            .map_err(|e| format!("cannot size ONNX Runtime's thread pool: {e}"))?;
        builder
            .with_name("framefusion")
            .with_global_thread_pool(pool)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    outcome.as_ref().map_err(|e| UdfError::Setup(e.clone()))
}

/// A model's input or output: name and shape (-1 for a free dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Name.
    pub name: String,
    /// Dimensions (`-1`: any).
    pub shape: Vec<i64>,
}

/// One output tensor: (shape, values).
pub type Output = (Vec<i64>, Vec<f32>);

/// A loaded model.
#[derive(Debug)]
pub struct LoadedModel {
    session: Mutex<Session>,
    /// The model file.
    pub path: PathBuf,
    /// Where it runs.
    pub device: Device,
    /// Its inputs.
    pub inputs: Vec<Port>,
    /// Its outputs.
    pub outputs: Vec<Port>,
}

type ModelKey = (PathBuf, Device);

static MODELS: LazyLock<Mutex<HashMap<ModelKey, Arc<LoadedModel>>>> =
    LazyLock::new(Default::default);
static LOADS: AtomicUsize = AtomicUsize::new(0);
static LOADS_OF: LazyLock<Mutex<HashMap<PathBuf, usize>>> = LazyLock::new(Default::default);
static CUDA_WARNED: std::sync::Once = std::sync::Once::new();

/// How many models this process has loaded (each model and device once).
pub fn load_count() -> usize {
    LOADS.load(Ordering::Relaxed)
}

/// How many times this process has loaded the model file `path` (once per device): unlike
/// [`load_count`], not moved by other models loading on other threads meanwhile.
pub fn load_count_of(path: &Path) -> usize {
    let loads = LOADS_OF.lock().unwrap_or_else(|e| e.into_inner());
    loads.get(path).copied().unwrap_or(0)
}

fn ports(outlets: &[ort::value::Outlet]) -> Vec<Port> {
    outlets
        .iter()
        .map(|o| Port {
            name: o.name().to_owned(),
            shape: o
                .dtype()
                .tensor_shape()
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// The `model` label of a model's metrics: its file name.
pub fn model_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn model_error(path: &Path, e: impl std::fmt::Display) -> UdfError {
    UdfError::Model(format!("model '{}': {e}", path.display()))
}

/// A model that does not load: the setup's failure, not a video's.
fn load_error(path: &Path, e: impl std::fmt::Display) -> UdfError {
    UdfError::Setup(format!("model '{}': {e}", path.display()))
}

/// The model at `path` on the device `options` ask for, loaded on first use.
pub fn model(path: &Path, options: &OnnxOptions) -> Result<Arc<LoadedModel>, UdfError> {
    let env = ensure_runtime(&options.library())?;
    let device = Device::parse(&options.device)?;
    let key = (path.to_path_buf(), device);
    let mut models = MODELS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = models.get(&key) {
        return Ok(Arc::clone(m));
    }
    if !path.is_file() {
        return Err(UdfError::Setup(format!(
            "the model file '{}' is missing; run scripts/setup.sh (make setup) for the shipped models, or check the path",
            path.display()
        )));
    }
    let (session, device) = load(env, path, device)?;
    let loaded = Arc::new(LoadedModel {
        inputs: ports(session.inputs()),
        outputs: ports(session.outputs()),
        session: Mutex::new(session),
        path: path.to_path_buf(),
        device,
    });
    LOADS.fetch_add(1, Ordering::Relaxed);
    *LOADS_OF
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.to_path_buf())
        .or_default() += 1;
    framefusion_media::metrics::model_loaded(&model_label(path));
    log::info!("loaded model {} on {device}", path.display());
    models.insert(key, Arc::clone(&loaded));
    Ok(loaded)
}

fn load(
    env: &ort::environment::Environment,
    path: &Path,
    device: Device,
) -> Result<(Session, Device), UdfError> {
    let builder = || Session::builder(env).map_err(|e| load_error(path, e));
    if let Device::Cuda(n) = device {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(n)
            .build()
            .error_on_failure();
        let attempt = builder()?
            .with_execution_providers([cuda])
            .map_err(|e| e.to_string())
            .and_then(|mut b| b.commit_from_file(path).map_err(|e| e.to_string()));
        match attempt {
            Ok(session) => return Ok((session, device)),
            Err(e) => CUDA_WARNED.call_once(|| {
                log::warn!("CUDA was asked for (onnx.device) but cannot be used ({e}); running models on the CPU");
            }),
        }
    }
    let session = builder()?
        .commit_from_file(path)
        .map_err(|e| load_error(path, e))?;
    Ok((session, Device::Cpu))
}

impl LoadedModel {
    /// The model at `path` on the CPU in a session of its own with `threads` intra-op
    /// threads (spinning while waiting), outside the process's budget and cache: for
    /// measuring the pure inference time of a model at a given thread count.
    pub fn standalone(path: &Path, threads: usize, library: &Path) -> Result<Self, UdfError> {
        let env = ensure_runtime(library)?;
        let session = Session::builder(env)
            .map_err(|e| model_error(path, e))?
            .with_independent_thread_pool()
            .map_err(|e| model_error(path, e))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| model_error(path, e))?
            .with_intra_op_spinning(true)
            .map_err(|e| model_error(path, e))?
            .commit_from_file(path)
            .map_err(|e| model_error(path, e))?;
        Ok(Self {
            inputs: ports(session.inputs()),
            outputs: ports(session.outputs()),
            session: Mutex::new(session),
            path: path.to_path_buf(),
            device: Device::Cpu,
        })
    }

    /// A custom metadata entry of the model (for example a recogniser's character list).
    pub fn custom_metadata(&self, key: &str) -> Option<String> {
        self.session().metadata().ok().and_then(|m| m.custom(key))
    }

    /// The session, for models with several inputs (one caller at a time).
    pub fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the model on one f32 input tensor and returns the named output (or the
    /// first) as (shape, values).
    pub fn run(
        &self,
        input: &str,
        shape: Vec<i64>,
        data: Vec<f32>,
        output: Option<&str>,
    ) -> Result<Output, UdfError> {
        let name = output
            .map(str::to_owned)
            .or_else(|| self.outputs.first().map(|o| o.name.clone()))
            .ok_or_else(|| model_error(&self.path, "the model has no output"))?;
        let mut outputs = self.run_outputs(input, shape, data, &[name.as_str()])?;
        Ok(outputs.remove(0))
    }

    /// Runs the model on one f32 input tensor and returns the named outputs, in the order
    /// asked, as (shape, values).
    pub fn run_outputs(
        &self,
        input: &str,
        shape: Vec<i64>,
        data: Vec<f32>,
        names: &[&str],
    ) -> Result<Vec<Output>, UdfError> {
        let tensor = ort::value::Tensor::from_array((shape, data))
            .map_err(|e| model_error(&self.path, e))?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let outputs = crate::blocking::run_blocking(|| session.run(ort::inputs![input => tensor]))
            .map_err(|e| model_error(&self.path, e))?;
        framefusion_media::metrics::inference_seconds(
            &model_label(&self.path),
            started.elapsed().as_secs_f64(),
        );
        names
            .iter()
            .map(|&name| {
                let value = outputs.get(name).ok_or_else(|| {
                    model_error(
                        &self.path,
                        format!(
                            "no output named '{name}' (outputs: {})",
                            self.outputs
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
                let (shape, values) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| model_error(&self.path, format!("output '{name}': {e}")))?;
                Ok((shape.iter().copied().collect(), values.to_vec()))
            })
            .collect()
    }
}

/// Runs inference on items in batches, in order, on a thread of its own: the caller
/// prepares the next items (decodes, converts and resizes the next frames) while the
/// current batch runs. On a GPU two batches may wait; on the CPU one. Measured on 2 cores
/// (`text_area_ratio` over the 55 s trailer, release build): the pass took 9.70 s with
/// inference in place and the scalar resize, 8.9-9.1 s with this overlap and
/// [`crate::media::image::resize_rgb`]; the whole curation job on the 10-minute `bbb.mp4`
/// went from 1.35x to 1.17x its floor (benches/RESULTS.md).
///
/// The inference thread inherits the priority of the thread that creates the batcher:
/// create it where the consumer is built, not on the pass's consumer thread (which runs
/// below the decoder), so that it runs at the priority of ONNX Runtime's pool threads.
pub struct Batcher<T: Send + 'static, R: Send + 'static> {
    batch: usize,
    pending: Vec<T>,
    results: Vec<R>,
    run: Option<BatchRunner<T, R>>,
    worker: Option<BatchWorker<T, R>>,
}

/// What runs one batch.
type BatchRunner<T, R> = Box<dyn FnMut(Vec<T>) -> Result<Vec<R>, UdfError> + Send>;

type BatchWorker<T, R> = (
    std::sync::mpsc::SyncSender<Vec<T>>,
    std::thread::JoinHandle<Result<Vec<R>, UdfError>>,
);

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher of `batch` items per call of `run` for a model on `device`.
    pub fn new(
        device: Device,
        batch: usize,
        run: impl FnMut(Vec<T>) -> Result<Vec<R>, UdfError> + Send + 'static,
    ) -> Self {
        let queued = if device == Device::Cpu { 1 } else { 2 };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(queued);
        // the runner moves to the worker; if no thread can start, it runs in place
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(run)));
        let taken = std::sync::Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("framefusion-inference".to_owned())
            .spawn(move || {
                let mut run = taken
                    .lock()
                    .ok()
                    .and_then(|mut r| r.take())
                    .ok_or_else(|| UdfError::Model("inference has no runner".to_owned()))?;
                let mut results = Vec::new();
                for items in rx {
                    results.extend(run(items)?);
                }
                Ok(results)
            });
        match worker {
            Ok(handle) => Self {
                batch: batch.max(1),
                pending: Vec::with_capacity(batch.max(1)),
                results: Vec::new(),
                run: None,
                worker: Some((tx, handle)),
            },
            Err(e) => {
                log::warn!("cannot start an inference thread ({e}): inference runs in place");
                match shared.lock().ok().and_then(|mut r| r.take()) {
                    Some(run) => Self::inline(batch, run),
                    None => Self::inline(batch, |_| {
                        Err(UdfError::Model("inference has no runner".to_owned()))
                    }),
                }
            }
        }
    }

    /// A batcher that always runs in place.
    pub fn inline(
        batch: usize,
        run: impl FnMut(Vec<T>) -> Result<Vec<R>, UdfError> + Send + 'static,
    ) -> Self {
        Self {
            batch: batch.max(1),
            pending: Vec::with_capacity(batch.max(1)),
            results: Vec::new(),
            run: Some(Box::new(run)),
            worker: None,
        }
    }

    /// Adds an item; a full batch goes to inference.
    pub fn push(&mut self, item: T) -> Result<(), UdfError> {
        self.pending.push(item);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), UdfError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let items = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
        if let Some((tx, _)) = &self.worker {
            if tx.send(items).is_err() {
                // the worker stopped on an error: finish() returns it
                return self.stopped();
            }
            return Ok(());
        }
        match self.run.as_mut() {
            Some(run) => {
                let out = run(items)?;
                self.results.extend(out);
                Ok(())
            }
            None => Err(UdfError::Model("inference has no runner".to_owned())),
        }
    }

    fn stopped(&mut self) -> Result<(), UdfError> {
        match self.worker.take() {
            Some((tx, handle)) => {
                drop(tx);
                match handle.join() {
                    Ok(Ok(_)) => Err(UdfError::Model("inference stopped early".to_owned())),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(UdfError::Model("inference panicked".to_owned())),
                }
            }
            None => Ok(()),
        }
    }

    /// Runs what is left and returns every result, in the order of the items; the
    /// batcher takes no more items after this.
    pub fn finish(&mut self) -> Result<Vec<R>, UdfError> {
        self.flush()?;
        if let Some((tx, handle)) = self.worker.take() {
            drop(tx);
            let mut results = match handle.join() {
                Ok(outcome) => outcome?,
                Err(_) => return Err(UdfError::Model("inference panicked".to_owned())),
            };
            self.results.append(&mut results);
        }
        Ok(std::mem::take(&mut self.results))
    }
}

/// Runs `infer` on the frames of many rows: `load` gives row `i`'s frame (None for a null
/// row), up to `batch` rows are loaded at a time, and their frames go to `infer` in one
/// call per frame size. Each row gets its own outcome; a row whose frame failed keeps its
/// error, and a failed call fails the rows it was for.
pub fn infer_rows<T>(
    n: usize,
    batch: usize,
    mut load: impl FnMut(usize) -> Option<Result<crate::media::image::Rgb, UdfError>>,
    mut infer: impl FnMut(&[crate::media::image::Rgb]) -> Result<Vec<T>, UdfError>,
) -> Vec<Option<Result<T, UdfError>>> {
    let batch = batch.max(1);
    let mut out: Vec<Option<Result<T, UdfError>>> = Vec::with_capacity(n);
    for first in (0..n).step_by(batch) {
        // the window's loaded frames, by row
        let mut frames = Vec::new();
        for row in first..(first + batch).min(n) {
            match load(row) {
                Some(Ok(frame)) => {
                    frames.push((row, frame));
                    out.push(None);
                }
                Some(Err(e)) => out.push(Some(Err(e))),
                None => out.push(None),
            }
        }
        while let Some((_, head)) = frames.first() {
            let size = (head.width, head.height);
            let (same, rest): (Vec<_>, Vec<_>) = frames
                .into_iter()
                .partition(|(_, f)| (f.width, f.height) == size);
            frames = rest;
            let (rows, group): (Vec<usize>, Vec<_>) = same.into_iter().unzip();
            let outcome = infer(&group).and_then(|results| {
                if results.len() == rows.len() {
                    Ok(results)
                } else {
                    Err(UdfError::Model(format!(
                        "inference gave {} results for {} frames",
                        results.len(),
                        rows.len()
                    )))
                }
            });
            match outcome {
                Ok(results) => {
                    for (row, r) in rows.into_iter().zip(results) {
                        out[row] = Some(Ok(r));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for row in rows {
                        out[row] = Some(Err(UdfError::Model(message.clone())));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::image::Rgb;

    #[test]
    fn rows_are_batched_by_window_and_frame_size() {
        let frame = |w: usize| Rgb {
            width: w,
            height: 1,
            data: vec![0; w * 3],
        };
        // rows: 0 small, 1 null, 2 large, 3 failed, 4 small, 5 small
        let mut calls = Vec::new();
        let out = infer_rows(
            6,
            4,
            |row| match row {
                1 => None,
                3 => Some(Err(UdfError::Model("bad frame".to_owned()))),
                2 => Some(Ok(frame(8))),
                _ => Some(Ok(frame(4))),
            },
            |frames| {
                calls.push(frames.iter().map(|f| f.width).collect::<Vec<_>>());
                Ok(frames.iter().map(|f| f.width * 10).collect())
            },
        );
        // window 0..4: one call for the small frame, one for the large; window 4..6: one
        assert_eq!(calls, vec![vec![4], vec![8], vec![4, 4]]);
        let got: Vec<Option<Result<usize, String>>> = out
            .into_iter()
            .map(|o| o.map(|r| r.map_err(|e| e.to_string())))
            .collect();
        assert_eq!(got[0], Some(Ok(40)));
        assert_eq!(got[1], None);
        assert_eq!(got[2], Some(Ok(80)));
        assert!(got[3].as_ref().is_some_and(|r| r.is_err()));
        assert_eq!(got[4], Some(Ok(40)));
        assert_eq!(got[5], Some(Ok(40)));
    }
}

/// The models an operator declares it runs (`VideoOperator::models`), loaded once per
/// call by the operator scaffold, which hands them to the operator's rows and decode-pass
/// consumers: an operator never loads a model itself.
#[derive(Default)]
pub struct Models(Vec<(String, Arc<LoadedModel>)>);

impl Models {
    /// Loads `names` (files in `onnx.model_dir`, or paths) under `options` (cached per
    /// process: a model is loaded once); a missing library or model file is a setup
    /// failure.
    pub fn load(names: &[impl AsRef<str>], options: &OnnxOptions) -> Result<Self, UdfError> {
        names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                Ok((
                    name.to_owned(),
                    model(&options.model_dir().join(name), options)?,
                ))
            })
            .collect::<Result<Vec<_>, UdfError>>()
            .map(Self)
    }

    /// The names of the models held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// The model `name`, one of those loaded.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModel>, UdfError> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| Arc::clone(m))
            .ok_or_else(|| {
                UdfError::Setup(format!(
                    "the model '{name}' was not declared by the operator that asks for it"
                ))
            })
    }
}
