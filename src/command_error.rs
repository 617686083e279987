//! How a command ends. The kind decides the exit code, so every command
//! agrees: 0 success, 1 the input has errors, 2 usage or I/O trouble.

use std::process::ExitCode;

#[derive(Debug)]
pub enum CommandError {
    /// The config (or other input) has errors; they were already printed.
    Invalid,
    /// Bad invocation or a file that cannot be read or written.
    Usage(String),
}

impl CommandError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Invalid => ExitCode::from(1),
            CommandError::Usage(_) => ExitCode::from(2),
        }
    }
}

impl From<std::io::Error> for CommandError {
    fn from(e: std::io::Error) -> Self {
        CommandError::Usage(e.to_string())
    }
}
