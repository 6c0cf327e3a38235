//! The typed error codes every error carries (`framefusion_common::code`), and the codes
//! of media, I/O and object-store errors (defined with the errors, in [`crate::error`]).

pub use crate::error::{io_code, object_store_code};
pub use framefusion_common::code::{Coded, ErrorCode};
