//! An HTTP server that records the requests it gets and answers as told:
//! the stand-in for the external services reporters talk to (GitHub's
//! status API, a chat webhook), shared by the reporter and secret tests.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Reads one HTTP/1.1 request (request line, headers, a body of
/// `Content-Length` bytes) from `sock`; `None` if the peer closed first.
/// Shared by the stand-ins for external services (this recorder, the
/// OAuth providers of `forge.rs`).
pub fn read_request(sock: &TcpStream) -> Option<Request> {
    let mut rd = BufReader::new(sock.try_clone().ok()?);
    let mut line = String::new();
    if rd.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    rd.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Statuses to answer, per path, before the default 201.
    script: HashMap<String, VecDeque<u16>>,
    /// Paths that never get an answer.
    hang: Vec<String>,
}

#[derive(Clone)]
pub struct Recorder {
    pub addr: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        let r = Recorder {
            addr,
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
        };
        let r2 = r.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let r3 = r2.clone();
                std::thread::spawn(move || r3.serve(sock));
            }
        });
        r
    }

    pub fn answer(&self, path: &str, statuses: &[u16]) {
        let mut st = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        st.script
            .insert(path.to_string(), statuses.iter().copied().collect());
    }

    pub fn hang(&self, path: &str) {
        let mut st = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        st.hang.push(path.to_string());
    }

    fn serve(&self, sock: TcpStream) {
        let Some(req) = read_request(&sock) else {
            return;
        };
        let path = req.path.clone();
        let (status, hang) = {
            let (lock, cv) = &*self.state;
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            st.requests.push(req);
            cv.notify_all();
            let status = st
                .script
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
                .unwrap_or(201);
            (status, st.hang.contains(&path))
        };
        if hang {
            // Hold the connection without answering until the client
            // gives up (or the test ends).
            let mut buf = [0u8; 64];
            while (&sock).read(&mut buf).unwrap_or(0) > 0 {}
            return;
        }
        let mut sock = sock;
        let _ = sock.write_all(
            format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
                .as_bytes(),
        );
    }

    /// Waits until the requests to paths starting with `prefix` satisfy
    /// `done`; returns them.
    pub fn wait(
        &self,
        what: &str,
        prefix: &str,
        done: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = Instant::now() + TIMEOUT;
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let got: Vec<Request> = st
                .requests
                .iter()
                .filter(|r| r.path.starts_with(prefix))
                .cloned()
                .collect();
            if done(&got) {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("timed out waiting for {what}; got {got:#?}");
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn wait_n(&self, prefix: &str, n: usize) -> Vec<Request> {
        self.wait(&format!("{n} request(s) to {prefix}"), prefix, |r| {
            r.len() >= n
        })
    }

    pub fn count(&self, prefix: &str) -> usize {
        let st = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        st.requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }
}
