//! The master's HTTP API as the benchmarks call it: one client, every
//! answer checked, on a one-thread runtime so the client takes as little
//! of the machine as it can.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{err, BenchError};

/// The master at one address.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(addr: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    /// The client for `m`: HTTPS pinning its certificate when it has TLS.
    pub fn of(m: &crate::run::master::Master) -> Result<Client, BenchError> {
        let Some(fp) = &m.fingerprint else {
            return Ok(Client::new(&m.http));
        };
        let trust = bbc_runtime::tls::Trust::Fingerprint(
            bbc_runtime::tls::parse_fingerprint(fp).map_err(err)?,
        );
        let config = bbc_runtime::tls::client_config(&trust).map_err(err)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*config).clone())
            .build()
            .map_err(|e| err(format!("an HTTPS client: {e}")))?;
        Ok(Client {
            http,
            base: format!("https://{}", m.http),
        })
    }

    /// Sends `req` (`what` names it in errors) and reads the JSON answer,
    /// which must have a status `ok` accepts.
    pub async fn call(
        what: &str,
        req: reqwest::RequestBuilder,
        ok: fn(reqwest::StatusCode) -> bool,
    ) -> Result<Value, BenchError> {
        let r = req.send().await.map_err(|e| err(format!("{what}: {e}")))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| err(format!("{what}: {e}")))?;
        if !ok(status) {
            return Err(err(format!("{what}: {status} {v}")));
        }
        Ok(v)
    }

    pub async fn get(&self, path: &str) -> Result<Value, BenchError> {
        let req = self.http.get(format!("{}{path}", self.base));
        Client::call(&format!("GET {path}"), req, |s| s.is_success()).await
    }

    /// Forces a build; returns its request id.
    pub async fn force(&self, builder: &str) -> Result<u64, BenchError> {
        let path = format!("/api/v1/builders/{builder}/force");
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&serde_json::json!({"reason": "bench"}));
        let v = Client::call(&format!("POST {path}"), req, |s| s.as_u16() == 201).await?;
        v["requests"][0]["id"]
            .as_u64()
            .ok_or_else(|| err(format!("POST {path}: no request id in {v}")))
    }

    /// How many workers are connected to this master.
    pub async fn connected_workers(&self) -> Result<usize, BenchError> {
        let v = self.get("/api/v1/workers").await?;
        Ok(v["workers"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|w| w["connected"] == true).count()))
    }

    pub async fn wait_workers(&self, n: usize) -> Result<(), BenchError> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get("/api/v1/workers").await?;
            let connected = v["workers"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|w| w["connected"] == true).count());
            if connected >= n {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(err(format!("only {connected} of {n} workers connected")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Nothing pending and nothing running. (The workers' `running` lists
    /// come from the master's memory: cheaper to poll than running builds,
    /// whose ETA costs store reads. A request leaves the pending index only
    /// once its build is in one of those lists.)
    async fn idle(&self) -> Result<bool, BenchError> {
        let p = self.get("/api/v1/requests?state=pending&limit=1").await?;
        let w = self.get("/api/v1/workers").await?;
        let pending = p["requests"].as_array().is_some_and(|a| !a.is_empty());
        let running = w["workers"].as_array().is_some_and(|a| {
            a.iter()
                .any(|w| w["running"].as_array().is_some_and(|r| !r.is_empty()))
        });
        Ok(!pending && !running)
    }

    /// No request pending or claimed in the store: with several masters
    /// on one store, what none of them has left to do (a dead master's
    /// claimed requests stay claimed until another takes them over).
    async fn store_idle(&self) -> Result<bool, BenchError> {
        for state in ["pending", "claimed"] {
            let v = self
                .get(&format!("/api/v1/requests?state={state}&limit=1"))
                .await?;
            if v["requests"].as_array().is_some_and(|a| !a.is_empty()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// As [`Client::wait_idle`], judged from the shared store.
    pub async fn wait_store_idle(&self, poll: Duration) -> Result<Instant, BenchError> {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            if self.store_idle().await? {
                return Ok(Instant::now());
            }
            if Instant::now() > until {
                return Err(err("builds did not finish within 10 minutes"));
            }
            tokio::time::sleep(poll).await;
        }
    }

    pub async fn wait_idle(&self, poll: Duration) -> Result<Instant, BenchError> {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            if self.idle().await? {
                return Ok(Instant::now());
            }
            if Instant::now() > until {
                return Err(err("builds did not finish within 10 minutes"));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Every record of a paginated list (`builds` or `requests`) with an id
    /// above `after`, oldest first.
    pub async fn all(&self, what: &str, after: u64) -> Result<Vec<Value>, BenchError> {
        let mut out = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let q = match before {
                Some(b) => format!("/api/v1/{what}?limit=1000&before={b}"),
                None => format!("/api/v1/{what}?limit=1000"),
            };
            let v = self.get(&q).await?;
            let page = v[what].as_array().cloned().unwrap_or_default();
            let Some(last) = page.last().and_then(|x| x["id"].as_u64()) else {
                break;
            };
            let done = last <= after + 1;
            out.extend(page.into_iter().filter(|x| x["id"].as_u64() > Some(after)));
            if done {
                break;
            }
            before = Some(last);
        }
        out.reverse();
        Ok(out)
    }

    /// `POST /api/v1/config` with the admin token: the master's report.
    pub async fn post_config(
        &self,
        token: &str,
        body: String,
    ) -> Result<bbc_runtime::master::apply::ApplyReport, BenchError> {
        let req = self
            .http
            .post(format!("{}/api/v1/config", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body);
        let v = Client::call("POST /api/v1/config", req, |s| s.is_success()).await?;
        serde_json::from_value(v["report"].clone())
            .map_err(|e| err(format!("POST /api/v1/config: report: {e}")))
    }
}

pub fn rt() -> Result<tokio::runtime::Runtime, BenchError> {
    // One thread: the client should take as little of the 2 cores as it can.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start the async runtime: {e}")))
}
