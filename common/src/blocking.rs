//! Running blocking work from synchronous UDF code without stalling async I/O threads.

/// Runs `f`, telling a multi-threaded tokio runtime (if the caller is on one) that this
/// thread blocks, so the runtime moves its other tasks to another worker meanwhile.
pub fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
