//! Upload and download steps on a Buildbot worker: its `upload_file`
//! pushes the file in `update_upload_file_write` requests (turned into
//! bbc's `FileBegin`/`FileData`/`FileEnd` events), its `download_file`
//! pulls with `update_read_file` what the build pushes as file frames.
//! A directory upload is the worker's `upload_directory`: an uncompressed
//! tarball, unpacked as it streams in (`untar.rs`). Directory downloads
//! are not supported yet (Buildbot's worker has no command for them).

use std::collections::VecDeque;

use bytes::Bytes;
use rmpv::Value;

use super::session::{Answer, Kind, Pending, Running, Session};
use super::untar::{Event, Untar};
use crate::protocol::check_relative_path;
use crate::state::connection::CmdEvent;

/// At most this much of the downloads' data waits for the worker to pull
/// it; beyond, the session stops taking the builds' frames until it does.
pub(super) const MAX_BUFFERED: usize = 1 << 20;

/// The size of the pieces a transfer moves in, as bbc's own `CHUNK`.
const BLOCK: u64 = crate::protocol::CHUNK as u64;

/// A download's data between the build (which pushes) and the worker
/// (which pulls).
#[derive(Default)]
pub(super) struct Pull {
    buf: VecDeque<Bytes>,
    len: usize,
    /// The build sent the whole file.
    done: bool,
    /// A read the worker is waiting on: its `seq_number` and `length`.
    waiting: Option<(u64, usize)>,
}

impl Pull {
    /// Up to `length` bytes, or `None` when nothing can be said yet.
    fn take(&mut self, length: usize) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            // An empty answer tells the worker the file is complete.
            return self.done.then(Vec::new);
        }
        let mut out = Vec::with_capacity(length.min(self.len));
        while out.len() < length {
            let Some(mut chunk) = self.buf.pop_front() else {
                break;
            };
            let want = length - out.len();
            if chunk.len() > want {
                let rest = chunk.split_off(want);
                self.buf.push_front(rest);
            }
            out.extend_from_slice(&chunk);
        }
        self.len -= out.len();
        Some(out)
    }
}

impl Session {
    /// What the downloads hold, waiting for the worker.
    pub(super) fn buffered(&self) -> usize {
        self.running
            .values()
            .map(|r| match &r.kind {
                Kind::Download(p) => p.len,
                _ => 0,
            })
            .sum()
    }

    /// The worker-side path of a transfer, or why it is refused.
    fn transfer_path(
        &self,
        builder_dir: &str,
        workdir: &str,
        path: &str,
        directory: bool,
        verb: &str,
    ) -> Result<String, String> {
        if directory && verb == "download" {
            return Err("directory downloads are not supported on Buildbot workers yet".into());
        }
        check_relative_path(path).map_err(|e| format!("{verb} path: {e}"))?;
        Ok(format!("{}/{path}", self.dir(builder_dir, workdir)?))
    }

    pub(super) async fn start_upload(
        &mut self,
        id: u64,
        builder_dir: String,
        workdir: &str,
        src: &str,
        directory: bool,
    ) -> Result<(), String> {
        let path = match self.transfer_path(&builder_dir, workdir, src, directory, "upload") {
            Ok(p) => p,
            Err(why) => {
                self.finish_with_error(id, why).await;
                return Ok(());
            }
        };
        if directory {
            let args = Value::Map(vec![
                (Value::from("path"), Value::from(path)),
                (Value::from("maxsize"), Value::Nil),
                (Value::from("blocksize"), Value::from(BLOCK)),
                // Uncompressed: the master unpacks as it streams.
                (Value::from("compress"), Value::Nil),
            ]);
            let kind = Kind::UploadDir(Untar::new());
            return self
                .start(id, builder_dir, "upload_directory", args, kind)
                .await;
        }
        let args = Value::Map(vec![
            (Value::from("path"), Value::from(path)),
            (Value::from("maxsize"), Value::Nil),
            (Value::from("blocksize"), Value::from(BLOCK)),
            (Value::from("keepstamp"), Value::from(false)),
        ]);
        self.start(
            id,
            builder_dir,
            "upload_file",
            args,
            Kind::Upload { began: false },
        )
        .await
    }

    pub(super) async fn start_download(
        &mut self,
        id: u64,
        builder_dir: String,
        workdir: &str,
        dest: &str,
        directory: bool,
    ) -> Result<(), String> {
        let path = match self.transfer_path(&builder_dir, workdir, dest, directory, "download") {
            Ok(p) => p,
            Err(why) => {
                self.finish_with_error(id, why).await;
                return Ok(());
            }
        };
        let args = Value::Map(vec![
            (Value::from("path"), Value::from(path)),
            (Value::from("maxsize"), Value::Nil),
            (Value::from("blocksize"), Value::from(BLOCK)),
            // The worker's default permissions, as bbc's worker (0644
            // under the usual umask).
            (Value::from("mode"), Value::Nil),
        ]);
        self.start(
            id,
            builder_dir,
            "download_file",
            args,
            Kind::Download(Pull::default()),
        )
        .await
    }

    async fn start(
        &mut self,
        id: u64,
        builder_dir: String,
        command: &str,
        args: Value,
        kind: Kind,
    ) -> Result<(), String> {
        self.running
            .insert(id, Running::new(builder_dir.clone(), kind));
        self.request(
            "start_command",
            vec![
                ("builder_name", Value::from(builder_dir)),
                ("command_id", Value::from(id.to_string())),
                ("command_name", Value::from(command)),
                ("args", args),
            ],
            Pending::Start(id),
        )
        .await
    }

    /// Marks an upload begun, telling the build a file begins.
    async fn upload_begin(&mut self, id: u64) -> Result<(), String> {
        match self.running.get_mut(&id).map(|r| &mut r.kind) {
            Some(Kind::Upload { began }) => {
                if !*began {
                    *began = true;
                    self.deliver(
                        id,
                        CmdEvent::FileBegin {
                            path: String::new(),
                            mode: 0o644,
                        },
                    )
                    .await;
                }
                Ok(())
            }
            _ => Err(format!("command {id} is not an upload")),
        }
    }

    pub(super) async fn upload_data(&mut self, id: u64, data: Value) -> Result<(), String> {
        let bytes = match data {
            Value::Binary(b) => b,
            Value::String(s) => s.into_bytes(),
            _ => return Err("upload data is not bytes".into()),
        };
        self.upload_begin(id).await?;
        if !bytes.is_empty() {
            self.deliver(id, CmdEvent::FileData(Bytes::from(bytes)))
                .await;
        }
        Ok(())
    }

    pub(super) async fn upload_close(&mut self, id: u64) -> Result<(), String> {
        self.upload_begin(id).await?;
        self.deliver(id, CmdEvent::FileEnd).await;
        Ok(())
    }

    /// A piece of a directory upload's tarball.
    pub(super) async fn upload_dir_data(&mut self, id: u64, data: Value) -> Result<(), String> {
        let bytes = match data {
            Value::Binary(b) => b,
            _ => return Err("upload data is not bytes".into()),
        };
        let Some(Kind::UploadDir(u)) = self.running.get_mut(&id).map(|r| &mut r.kind) else {
            return Err(format!("command {id} is not a directory upload"));
        };
        let mut events = Vec::new();
        u.feed(&bytes, &mut events)?;
        for e in events {
            let ev = match e {
                Event::Begin { path, mode } => CmdEvent::FileBegin { path, mode },
                Event::Data(d) => CmdEvent::FileData(d),
                Event::End => CmdEvent::FileEnd,
            };
            self.deliver(id, ev).await;
        }
        Ok(())
    }

    /// The worker sent the whole tarball.
    pub(super) fn upload_dir_end(&mut self, id: u64) -> Result<(), String> {
        match self.running.get(&id).map(|r| &r.kind) {
            Some(Kind::UploadDir(u)) if u.at_boundary() => Ok(()),
            Some(Kind::UploadDir(_)) => Err("the tarball ended in the middle of an entry".into()),
            _ => Err(format!("command {id} is not a directory upload")),
        }
    }

    /// A piece of a download's file from the build.
    pub(super) async fn download_data(&mut self, id: u64, data: Bytes) -> Result<(), String> {
        let Some(Kind::Download(p)) = self.running.get_mut(&id).map(|r| &mut r.kind) else {
            // The download ended already (the worker failed it).
            return Ok(());
        };
        p.len += data.len();
        p.buf.push_back(data);
        self.serve_waiting(id).await
    }

    /// The build sent the whole file.
    pub(super) async fn download_end(&mut self, id: u64) -> Result<(), String> {
        let Some(Kind::Download(p)) = self.running.get_mut(&id).map(|r| &mut r.kind) else {
            return Ok(());
        };
        p.done = true;
        self.serve_waiting(id).await
    }

    /// The worker asks for the next `length` bytes of a download.
    pub(super) fn read_request(&mut self, id: u64, seq: u64, length: Option<u64>) -> Answer {
        let Some(Kind::Download(p)) = self.running.get_mut(&id).map(|r| &mut r.kind) else {
            return Answer::Failed(format!("command {id} is not a download"));
        };
        let length = usize::try_from(length.unwrap_or(BLOCK))
            .unwrap_or(usize::MAX)
            .max(1);
        match p.take(length) {
            Some(data) => Answer::Done(Value::Binary(data)),
            None => {
                p.waiting = Some((seq, length));
                Answer::Later
            }
        }
    }

    async fn serve_waiting(&mut self, id: u64) -> Result<(), String> {
        let Some(Kind::Download(p)) = self.running.get_mut(&id).map(|r| &mut r.kind) else {
            return Ok(());
        };
        let Some((seq, length)) = p.waiting else {
            return Ok(());
        };
        let Some(data) = p.take(length) else {
            return Ok(());
        };
        p.waiting = None;
        self.answer(seq, Answer::Done(Value::Binary(data))).await
    }
}

#[cfg(test)]
mod tests {
    use super::Pull;
    use bytes::Bytes;

    #[test]
    fn pull_takes_in_pieces_and_ends_empty() {
        let mut p = Pull::default();
        assert_eq!(p.take(4), None, "nothing yet, not done");
        for c in [&b"abc"[..], b"defg"] {
            p.len += c.len();
            p.buf.push_back(Bytes::copy_from_slice(c));
        }
        assert_eq!(p.take(5).as_deref(), Some(&b"abcde"[..]));
        assert_eq!(p.len, 2);
        assert_eq!(p.take(5).as_deref(), Some(&b"fg"[..]));
        assert_eq!(p.take(5), None);
        p.done = true;
        assert_eq!(p.take(5), Some(Vec::new()));
    }
}
