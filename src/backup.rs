//! `bbc backup STATE OUT`: asks the master running on STATE for a
//! consistent copy of its state into OUT (through `STATE/control.sock`),
//! or, when no master runs there, makes the copy itself. See
//! `bbc_runtime::backup` for what is copied, docs/operations.md "Backups".

use std::path::{Path, PathBuf};

use bbc_runtime::backup::{self, BackupError};
use bbc_runtime::control::{self, Answer, ClientError, Request};
use bbc_runtime::store::{BackupReport, RedbStore};

use crate::command_error::CommandError;

pub fn backup(state: &str, out: &str) -> Result<(), CommandError> {
    let state = Path::new(state);
    // The master runs in its own working directory: it gets an absolute
    // path (refusing any other), made here from ours.
    let out: PathBuf = std::path::absolute(out)
        .map_err(|e| CommandError::Usage(format!("backup directory {out}: {e}")))?;
    // Checked here too, so the answer does not depend on who copies.
    backup::check_out(&out).map_err(|e| CommandError::Usage(e.to_string()))?;
    let req = Request::Backup { out: out.clone() };
    let (report, by) = match control::request(state, &req) {
        Ok(Answer::Done { report }) => (report, "the running master"),
        Ok(Answer::Refused { error } | Answer::Failed { error }) => {
            return Err(CommandError::Usage(error))
        }
        Err(ClientError::Io(e)) => return Err(CommandError::Usage(e)),
        Err(ClientError::NoMaster) => (offline(state, &out)?, "bbc backup (no master runs)"),
    };
    print_report(&out, by, &report);
    Ok(())
}

/// No master runs on `state`: open its store and copy it here.
fn offline(state: &Path, out: &Path) -> Result<BackupReport, CommandError> {
    let db = state.join(bbc_runtime::store::redb_store::DB_FILE);
    // Opening would create an empty store: a mistyped STATE must not
    // give an empty "backup".
    if !db.is_file() {
        return Err(CommandError::Usage(format!(
            "{} is not a state directory (no {})",
            state.display(),
            db.display()
        )));
    }
    let store = RedbStore::open(state).map_err(|e| {
        CommandError::Usage(format!(
            "{e}; its control socket {} does not answer, so the backup cannot be taken",
            state.join(control::SOCKET).display()
        ))
    })?;
    backup::run(&store, state, out).map_err(|e| match e {
        BackupError::Refused(e) | BackupError::Failed(e) => CommandError::Usage(e),
    })
}

fn print_report(out: &Path, by: &str, r: &BackupReport) {
    println!("backup written to {} by {by}", out.display());
    println!(
        "  store:  {} builds, {} records, {} bytes of database",
        r.builds, r.records, r.db_bytes
    );
    println!(
        "  logs:   {} step logs, {} bytes ({} of steps running at the snapshot, copied as far as written)",
        r.logs, r.log_bytes, r.logs_running
    );
    println!(
        "  files:  {} uploaded files, {} bytes",
        r.files, r.file_bytes
    );
    println!(
        "restore: start a master with `--state {}` (secrets are not in the backup)",
        out.display()
    );
}
