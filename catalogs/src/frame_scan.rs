//! The scan behind `frames(...)`: its options ([`FrameOptions`]), its schema
//! ([`frames_schema`]) and the opener that decodes each listed file into batches of frame
//! rows (`FramesOpener`), on blocking threads through a bounded channel. The table
//! function itself is [`crate::frames`].

use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener};
use framefusion_media::decode::{DecodedFrame, Resize, Sampling, decode_frames};
use framefusion_media::error::retry_transient;
use framefusion_media::source::Confinement;
use framefusion_media::storage::StorageOptions;
use futures::StreamExt;

use crate::listing::ListedFile;
use crate::listing::listed_file;

static FRAMES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("frame_index", DataType::Int64, true),
        Field::new("pts_s", DataType::Float64, true),
        Field::new("is_keyframe", DataType::Boolean, true),
        Field::new("width", DataType::Int32, true),
        Field::new("height", DataType::Int32, true),
        Field::new("rgb", DataType::Binary, true),
        Field::new("decode_error", DataType::Utf8, true),
    ]))
});

/// Index of the `rgb` column in [`frames_schema`].
const RGB_COLUMN: usize = 6;

/// The schema of the frames table.
pub fn frames_schema() -> SchemaRef {
    Arc::clone(&FRAMES_SCHEMA)
}

/// How frames are sampled and sized (see the module docs for the option syntax).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrameOptions {
    /// Which frames.
    pub sampling: Sampling,
    /// Output size.
    pub resize: Resize,
    /// Frames per output batch.
    pub batch_frames: usize,
}

impl Default for FrameOptions {
    fn default() -> Self {
        Self {
            sampling: Sampling::All,
            resize: Resize::Original,
            batch_frames: 8,
        }
    }
}

impl fmt::Display for FrameOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sampling {
            Sampling::All => write!(f, "all")?,
            Sampling::Fps(fps) => write!(f, "fps={fps}")?,
            Sampling::Keyframes => write!(f, "keyframes")?,
        }
        match self.resize {
            Resize::Original => {}
            Resize::LongestSide(n) => write!(f, ",size={n}")?,
            Resize::Exact(w, h) => write!(f, ",size={w}x{h}")?,
            Resize::ShortestSide(n) => write!(f, ",shortest={n}")?,
        }
        write!(f, ",batch={}", self.batch_frames)
    }
}

impl FrameOptions {
    /// Parses `fps=1,size=224` and the like.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut options = Self::default();
        let bad = |part: &str, why: &str| {
            format!(
                "bad frames option '{part}': {why}; write options such as 'fps=1', 'keyframes', 'all', 'size=224', 'size=320x240', 'batch=8', separated by commas"
            )
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .map_or((part, None), |(k, v)| (k.trim(), Some(v.trim())));
            match (key.to_ascii_lowercase().as_str(), value) {
                ("all", None) => options.sampling = Sampling::All,
                ("keyframes", None) => options.sampling = Sampling::Keyframes,
                ("fps", Some(v)) => match v.parse::<f64>() {
                    Ok(fps) if fps.is_finite() && fps > 0.0 => {
                        options.sampling = Sampling::Fps(fps)
                    }
                    _ => return Err(bad(part, "fps must be a positive number")),
                },
                ("size", Some(v)) => {
                    options.resize = match v.split_once(['x', 'X']) {
                        Some((w, h)) => match (w.parse::<u32>(), h.parse::<u32>()) {
                            (Ok(w), Ok(h)) if w > 0 && h > 0 => Resize::Exact(w, h),
                            _ => {
                                return Err(bad(
                                    part,
                                    "size must be N or WxH with positive numbers",
                                ));
                            }
                        },
                        None => match v.parse::<u32>() {
                            Ok(n) if n > 0 => Resize::LongestSide(n),
                            _ => {
                                return Err(bad(
                                    part,
                                    "size must be N or WxH with positive numbers",
                                ));
                            }
                        },
                    }
                }
                ("shortest", Some(v)) => match v.parse::<u32>() {
                    Ok(n) if n > 0 => options.resize = Resize::ShortestSide(n),
                    _ => return Err(bad(part, "shortest must be a positive number")),
                },
                ("batch", Some(v)) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => options.batch_frames = n,
                    _ => return Err(bad(part, "batch must be a positive number")),
                },
                _ => return Err(bad(part, "unknown option")),
            }
        }
        Ok(options)
    }
}

/// Accumulates frame rows into batches of the frames schema.
#[derive(Default)]
struct FrameRows {
    path: StringBuilder,
    index: Int64Builder,
    pts: Float64Builder,
    key: BooleanBuilder,
    width: Int32Builder,
    height: Int32Builder,
    rgb: BinaryBuilder,
    error: StringBuilder,
    rows: usize,
}

impl FrameRows {
    fn push_frame(&mut self, path: &str, f: &DecodedFrame) {
        self.path.append_value(path);
        self.index.append_value(f.index);
        self.pts.append_value(f.pts_s);
        self.key.append_value(f.is_keyframe);
        self.width
            .append_value(i32::try_from(f.width).unwrap_or(i32::MAX));
        self.height
            .append_value(i32::try_from(f.height).unwrap_or(i32::MAX));
        self.rgb.append_value(&f.rgb);
        self.error.append_null();
        self.rows += 1;
    }

    fn push_error(&mut self, path: &str, error: &str) {
        self.path.append_value(path);
        self.index.append_null();
        self.pts.append_null();
        self.key.append_null();
        self.width.append_null();
        self.height.append_null();
        self.rgb.append_null();
        self.error.append_value(error);
        self.rows += 1;
    }

    fn finish(&mut self, columns: Option<&[usize]>) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.path.finish()),
            Arc::new(self.index.finish()),
            Arc::new(self.pts.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.width.finish()),
            Arc::new(self.height.finish()),
            Arc::new(self.rgb.finish()),
            Arc::new(self.error.finish()),
        ];
        self.rows = 0;
        let batch = RecordBatch::try_new(frames_schema(), arrays)?;
        Ok(match columns {
            Some(c) => batch.project(c)?,
            None => batch,
        })
    }
}

/// Opens one file for the frames table: decodes it on a blocking thread and streams its
/// frames as batches through a channel of two batches (the memory bound).
pub(crate) struct FramesOpener {
    options: FrameOptions,
    storage: StorageOptions,
    columns: Option<Vec<usize>>,
    /// Where files may be opened (a listed file outside, through a link, is an error row).
    confinement: Confinement,
}

impl FramesOpener {
    pub(crate) fn new(
        options: FrameOptions,
        storage: StorageOptions,
        columns: Option<Vec<usize>>,
        confinement: Confinement,
    ) -> Self {
        Self {
            options,
            storage,
            columns,
            confinement,
        }
    }
}

impl FileOpener for FramesOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let listed = listed_file(&file);
        let options = self.options.clone();
        let columns = self.columns.clone();
        let storage = self.storage.clone();
        let confinement = self.confinement.clone();
        Ok(Box::pin(async move {
            // the decode starts when the file's rows are first read, not when the file is
            // opened: a scan opens its next file while it reads the current one, and a
            // decode started then would hold a thread of the CPU budget's pool while it
            // waits for its reader, so a partition's next file could hold the pool's
            // threads that the files being read wait for
            let rows = futures::stream::once(async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
                // on the CPU budget's pool, as every decode: the partitions of a scan
                // take turns on its threads and share its decoder threads
                tokio::task::spawn_blocking(move || {
                    framefusion_media::cpu::budget().run(|| {
                        let columns = columns.as_deref();
                        decode_file(&listed, &options, &storage, &confinement, columns, &tx)
                    })
                });
                tokio_stream::wrappers::ReceiverStream::new(rx)
            })
            .flatten();
            Ok(rows.boxed())
        }))
    }
}

/// Decodes one listed file into batches sent on `tx`; stops early when the receiver is
/// gone (the query was cancelled or has enough rows).
fn decode_file(
    file: &ListedFile,
    options: &FrameOptions,
    storage: &StorageOptions,
    confinement: &Confinement,
    columns: Option<&[usize]>,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) {
    let mut rows = FrameRows::default();
    let send = |rows: &mut FrameRows| -> ControlFlow<()> {
        let batch = rows.finish(columns);
        let failed = batch.is_err();
        // a closed channel means nobody reads any more: stop decoding
        if tx.blocking_send(batch).is_err() || failed {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    if let Some(error) = &file.error {
        rows.push_error(&file.uri, error);
        let _ = send(&mut rows);
        return;
    }
    // the pictures are converted only when the query reads them
    let with_pixels = columns.is_none_or(|c| c.contains(&RGB_COLUMN));
    let mut emitted = 0usize;
    let outcome = retry_transient(|| {
        // a retry restarts the file: frames already sent are not sent again
        let mut seen = 0usize;
        let input = confinement.source(&file.uri)?.media_input(storage)?;
        decode_frames(
            &input,
            options.sampling,
            options.resize,
            with_pixels,
            |frame| {
                // nobody reads any more (the query was cancelled or has enough rows):
                // stop at once rather than at the next full batch
                if tx.is_closed() {
                    return ControlFlow::Break(());
                }
                seen += 1;
                if seen <= emitted {
                    return ControlFlow::Continue(());
                }
                emitted += 1;
                rows.push_frame(&file.uri, &frame);
                if rows.rows >= options.batch_frames {
                    return send(&mut rows);
                }
                ControlFlow::Continue(())
            },
        )
    });
    match outcome {
        Err(e) if e.is_transient() => {
            let _ = tx.blocking_send(Err(crate::error::task_error(e)));
            return;
        }
        Err(e) => {
            // frames decoded before the failure stay; the error is a row of its own
            rows.push_error(&file.uri, &e.to_string());
        }
        Ok(()) => {}
    }
    if rows.rows > 0 {
        let _ = send(&mut rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        assert_eq!(FrameOptions::parse("").ok(), Some(FrameOptions::default()));
        let o = FrameOptions::parse("fps=1, size=224").unwrap_or_default();
        assert_eq!(o.sampling, Sampling::Fps(1.0));
        assert_eq!(o.resize, Resize::LongestSide(224));
        let short = FrameOptions::parse("fps=1,shortest=224").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(short.resize, Resize::ShortestSide(224));
        assert_eq!(short.to_string(), "fps=1,shortest=224,batch=8");
        let o = FrameOptions::parse("keyframes,size=320x240,batch=2").unwrap_or_default();
        assert_eq!(
            (o.sampling, o.resize, o.batch_frames),
            (Sampling::Keyframes, Resize::Exact(320, 240), 2)
        );
        assert!(
            FrameOptions::parse("fps=0")
                .is_err_and(|e| e.contains("fps must be a positive number"))
        );
        assert!(FrameOptions::parse("colour=red").is_err_and(|e| e.contains("unknown option")));
        assert_eq!(
            FrameOptions::parse("fps=2,size=8x6")
                .map(|o| o.to_string())
                .ok()
                .as_deref(),
            Some("fps=2,size=8x6,batch=8")
        );
    }
}
