//! `bbc passwd`: reads a password and prints its argon2id PHC string, the
//! value to store as a user's `password=` secret. The password itself is
//! never written anywhere.
//!
//! From a terminal it asks twice with echo off (termios); otherwise it
//! reads the first line of stdin, so scripts can pipe one in.

use std::io::{BufRead, IsTerminal, Write};

use crate::command_error::CommandError;

pub fn passwd() -> Result<(), CommandError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(CommandError::Usage("the passwords differ".into()));
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(CommandError::Usage("an empty password is refused".into()));
    }
    let phc = bbc_runtime::password::hash(&password).map_err(CommandError::Usage)?;
    println!("{phc}");
    Ok(())
}

/// One line from the terminal with echo off, restored afterwards (also
/// when reading fails).
fn prompt(label: &str) -> Result<String, CommandError> {
    let mut err = std::io::stderr();
    write!(err, "{label}")?;
    err.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, a terminal (checked by the caller); the
    // pointer is to a live termios.
    let echo_off = unsafe { libc::tcgetattr(fd, &mut saved) } == 0 && {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above, with a termios derived from the saved one.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) == 0 }
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if echo_off {
        // SAFETY: restores what tcgetattr returned for the same fd.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
