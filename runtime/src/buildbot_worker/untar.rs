//! The tarball of a Buildbot directory upload, read as it streams in and
//! turned into bbc's per-file upload events. Regular files only (ustar,
//! with PAX and GNU long names); directories are implied by the files'
//! paths; links are refused. The master's upload code checks each path
//! as for a bbc worker.

use bytes::Bytes;

const BLOCK: usize = 512;

/// What the tarball says, in bbc's terms.
#[derive(Debug, PartialEq)]
pub(super) enum Event {
    Begin { path: String, mode: u32 },
    Data(Bytes),
    End,
}

enum State {
    /// Reading a 512-byte header into `head`.
    Header,
    /// The data of an entry: `left` bytes, then `pad` to the block end.
    Data { left: u64, pad: u64, into: Into },
    /// Padding after an entry's data.
    Pad(u64),
}

enum Into {
    File,
    Skip,
    /// A PAX extended header or a GNU long name, collected.
    Meta(Vec<u8>, u8),
}

pub(super) struct Untar {
    head: Vec<u8>,
    state: State,
    /// The next entry's name from a PAX header or GNU long name.
    next_path: Option<String>,
}

impl Untar {
    pub(super) fn new() -> Untar {
        Untar {
            head: Vec::with_capacity(BLOCK),
            state: State::Header,
            next_path: None,
        }
    }

    /// Whether the tarball ended at an entry's boundary.
    pub(super) fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.head.is_empty()
    }

    pub(super) fn feed(&mut self, mut data: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    let n = (BLOCK - self.head.len()).min(data.len());
                    self.head.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.head.len() == BLOCK {
                        let head = std::mem::take(&mut self.head);
                        self.header(&head, out)?;
                    }
                }
                State::Data { left, pad, into } => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    match into {
                        Into::File => out.push(Event::Data(Bytes::copy_from_slice(&data[..n]))),
                        Into::Skip => {}
                        Into::Meta(v, _) => {
                            if v.len() + n > 1 << 20 {
                                return Err("a tar extended header over 1 MiB".into());
                            }
                            v.extend_from_slice(&data[..n]);
                        }
                    }
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        let pad = *pad;
                        if let State::Data { into, .. } =
                            std::mem::replace(&mut self.state, State::Pad(pad))
                        {
                            self.entry_done(into, out);
                        }
                        if pad == 0 {
                            self.state = State::Header;
                        }
                    }
                }
                State::Pad(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    fn entry_done(&mut self, into: Into, out: &mut Vec<Event>) {
        match into {
            Into::File => out.push(Event::End),
            Into::Skip => {}
            Into::Meta(v, b'L') => {
                self.next_path = Some(cstr(&v));
            }
            Into::Meta(v, _) => {
                // PAX records: "LEN key=value\n".
                let text = String::from_utf8_lossy(&v);
                for rec in text.split('\n') {
                    if let Some((_, kv)) = rec.split_once(' ') {
                        if let Some(p) = kv.strip_prefix("path=") {
                            self.next_path = Some(p.to_string());
                        }
                    }
                }
            }
        }
    }

    fn header(&mut self, h: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
        if h.iter().all(|b| *b == 0) {
            // The end-of-archive blocks.
            return Ok(());
        }
        let size = octal(&h[124..136]).ok_or("a tar header with a bad size")?;
        let mode = octal(&h[100..108]).unwrap_or(0o644) as u32 & 0o777;
        let kind = h[156];
        let mut path = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                path = format!("{prefix}/{path}");
            }
        }
        if let Some(p) = self.next_path.take() {
            path = p;
        }
        let path = path.trim_start_matches("./").to_string();
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let into = match kind {
            b'0' | 0 | b'7' => {
                out.push(Event::Begin { path, mode });
                Into::File
            }
            b'x' | b'L' => Into::Meta(Vec::new(), kind),
            // Directories come with their files; global PAX headers say
            // nothing bbc keeps.
            b'5' | b'g' => Into::Skip,
            b'1' | b'2' => {
                return Err(format!(
                    "`{path}` is a link; directory uploads from Buildbot workers take regular files only"
                ))
            }
            k => return Err(format!("`{path}`: tar entry type {:?} is not supported", k as char)),
        };
        if size == 0 {
            self.entry_done(into, out);
            self.state = State::Header;
        } else {
            self.state = State::Data {
                left: size,
                pad,
                into,
            };
        }
        Ok(())
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// An octal number field (NUL or space terminated); `None` when it is not
/// one (base-256 sizes, over 8 GiB, are refused that way too).
fn octal(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        let sz = format!("{size:011o}");
        h[124..135].copy_from_slice(sz.as_bytes());
        h[156] = kind;
        h[257..262].copy_from_slice(b"ustar");
        h
    }

    fn tarball() -> Vec<u8> {
        let mut t = header("", 0, b'5');
        t.extend(header("a.txt", 3, b'0'));
        t.extend(b"abc");
        t.extend(vec![0u8; BLOCK - 3]);
        let pax = b"30 path=sub/a-long-name.txt\n";
        t.extend(header("PaxHeader", pax.len(), b'x'));
        t.extend(pax);
        t.extend(vec![0u8; BLOCK - pax.len()]);
        t.extend(header("sub/short", 0, b'0'));
        t.extend(vec![0u8; 2 * BLOCK]);
        t
    }

    #[test]
    fn files_in_any_pieces() {
        let t = tarball();
        for piece in [1, 7, 512, 100_000] {
            let mut u = Untar::new();
            let mut out = Vec::new();
            for c in t.chunks(piece) {
                u.feed(c, &mut out).unwrap();
            }
            let mut data = Vec::new();
            let mut names = Vec::new();
            for e in out {
                match e {
                    Event::Begin { path, mode } => names.push((path, mode)),
                    Event::Data(d) => data.extend_from_slice(&d),
                    Event::End => names.push(("end".into(), 0)),
                }
            }
            assert_eq!(
                names,
                vec![
                    ("a.txt".to_string(), 0o644),
                    ("end".into(), 0),
                    ("sub/a-long-name.txt".into(), 0o644),
                    ("end".into(), 0)
                ],
                "pieces of {piece}"
            );
            assert_eq!(data, b"abc");
            assert!(u.at_boundary());
        }
    }

    #[test]
    fn links_and_bad_headers_are_errors() {
        let mut u = Untar::new();
        let e = u.feed(&header("l", 0, b'2'), &mut Vec::new());
        assert!(e.unwrap_err().contains("is a link"));
        let mut h = header("f", 0, b'0');
        h[124..128].copy_from_slice(b"zzzz");
        assert!(Untar::new().feed(&h, &mut Vec::new()).is_err());
        let mut u = Untar::new();
        u.feed(&header("f", 10, b'0')[..100], &mut Vec::new())
            .unwrap();
        assert!(!u.at_boundary());
    }
}
