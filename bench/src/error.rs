//! How a benchmark fails: a message for the person running it.

#[derive(Debug)]
pub struct BenchError(pub String);

/// A failure from anything printable (an I/O or HTTP error, a message).
pub fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError(e.to_string())
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        err(e)
    }
}
