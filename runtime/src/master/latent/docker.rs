//! Latent workers in Docker containers, through the Docker Engine API
//! (`bollard`; the unix socket `/var/run/docker.sock`, or `DOCKER_HOST`).
//!
//! A container runs `bbc worker` on the host's network, so the master's
//! loopback address reaches it; the one-time password of the start goes
//! in its environment (`BBC_WORKER_PASSWORD`), never in its command line.
//! Nothing is pulled: the image must be on the engine already.

use std::collections::HashMap;

use bollard::errors::Error;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

/// Where the container's worker keeps its builds.
const BASEDIR: &str = "/var/lib/bbc-worker";

/// A client of the engine, at the API version the engine speaks (an
/// older engine refuses a newer client's requests).
async fn engine() -> Result<Docker, String> {
    let d = Docker::connect_with_defaults()
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
    d.negotiate_version()
        .await
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))
}

fn said(e: Error) -> String {
    match e {
        Error::DockerResponseServerError { message, .. } => {
            format!("the Docker engine said: {}", message.trim())
        }
        e => format!("the Docker engine failed: {e}"),
    }
}

/// Creates and starts `container` from `image`, running a worker named
/// `worker` that connects to `master` with `token`. Returns the
/// container's id.
pub(super) async fn start(
    container: &str,
    worker: &str,
    image: &str,
    master: &str,
    token: &str,
) -> Result<String, String> {
    let d = engine().await?;
    // One the last master left behind (killed before it could stop it).
    remove_with(&d, container).await?;
    let mut labels = HashMap::new();
    labels.insert("org.bbc.worker".to_string(), worker.to_string());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(
            [
                "bbc",
                "worker",
                "--master",
                master,
                "--name",
                worker,
                "--basedir",
                BASEDIR,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        env: Some(vec![format!("BBC_WORKER_PASSWORD={token}")]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptions {
        name: Some(container.to_string()),
        ..Default::default()
    };
    let created = d.create_container(Some(opts), body).await.map_err(said)?;
    if let Err(e) = d.start_container(&created.id, None).await {
        let _ = remove_with(&d, &created.id).await;
        return Err(said(e));
    }
    Ok(created.id)
}

/// Waits until the container stops, and says how.
pub(super) async fn exited(id: &str) -> String {
    let d = match engine().await {
        Ok(d) => d,
        Err(why) => return why,
    };
    let mut wait = d.wait_container(id, None::<WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(r)) => format!("its container exited with code {}", r.status_code),
        Some(Err(Error::DockerContainerWaitError { code, error })) if error.is_empty() => {
            format!("its container exited with code {code}")
        }
        Some(Err(Error::DockerContainerWaitError { code, error })) => {
            format!("its container exited with code {code}: {error}")
        }
        Some(Err(e)) => format!("its container is gone: {}", said(e)),
        None => "its container is gone".to_string(),
    }
}

/// Stops and removes `container` (a name or an id); one that does not
/// exist is no error.
pub(super) async fn remove(container: &str) -> Result<(), String> {
    let d = engine().await?;
    let stop = StopContainerOptions {
        t: Some(10),
        ..Default::default()
    };
    // Stopped first so that its worker ends on SIGTERM; whatever the stop
    // says (already stopped, gone, being removed), the forced removal
    // below decides.
    let _ = d.stop_container(container, Some(stop)).await;
    remove_with(&d, container).await
}

async fn remove_with(d: &Docker, container: &str) -> Result<(), String> {
    let opts = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match d.remove_container(container, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // Another stop is removing it (the idle check and a shutdown):
        // done when the engine says it is gone.
        Err(Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            let opts = WaitContainerOptions {
                condition: "removed".into(),
            };
            let mut gone = d.wait_container(container, Some(opts));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), gone.next()).await;
            Ok(())
        }
        Err(e) => Err(said(e)),
    }
}
