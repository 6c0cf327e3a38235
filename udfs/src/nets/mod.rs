//! The neural networks the operators run, apart from the operators: each holds a
//! network's models, its pre- and post-processing as its reference implementation does
//! them, and nothing of SQL, Arrow or the decode pass (the operators in `crate::faces`,
//! `crate::text` and `crate::lipsync` shape their results and feed them frames).
//!
//! - [`mtcnn`]: MTCNN face detection (P-, R- and O-Net).
//! - [`ppocr`]: PP-OCRv4 text detection and recognition.

pub mod mtcnn;
pub mod ppocr;
