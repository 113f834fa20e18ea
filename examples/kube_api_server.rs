//! The test Kubernetes API server of `tests/support/kube_api.rs` as a standalone process, for running the
//! controller by hand or from scripts without a cluster.
//!
//! ```sh
//! cargo run --example kube_api_server -- --listen 127.0.0.1:0 --manifests DIR --kubeconfig OUT
//! ```
//!
//! Every `*.yaml` / `*.yml` file in `DIR` (multi-document YAML; a `kind: List` is expanded) is loaded, a
//! kubeconfig pointing at the server is written to `OUT`, `listening on http://ADDR` is printed, and the
//! server runs until it is killed. Plain HTTP, no authentication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

#[path = "../tests/support/kube_api.rs"]
mod kube_api;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
#[command(about = "A small Kubernetes API server for tests")]
struct Args {
    /// Address to listen on (port 0: an ephemeral port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A directory of YAML manifests to serve.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// The objects of every YAML file in `dir`, files in name order.
fn load_manifests(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", file.display()))?;
        for doc in docs {
            match doc {
                Value::Null => {}
                Value::Object(_) if doc["kind"] == "List" => {
                    if let Some(items) = doc["items"].as_array() {
                        objects.extend(items.iter().cloned());
                    }
                }
                Value::Object(_) => objects.push(doc),
                _ => bail!("{}: a document is not an object", file.display()),
            }
        }
    }
    Ok(objects)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let objects = match &args.manifests {
        Some(dir) => load_manifests(dir)?,
        None => Vec::new(),
    };
    let server = kube_api::KubeApi::start_on(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    for obj in &objects {
        server.try_apply(obj).map_err(anyhow::Error::msg)?;
    }
    if let Some(out) = &args.kubeconfig {
        server
            .write_kubeconfig(out)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    eprintln!("loaded {} objects", objects.len());
    println!("listening on {}", server.url());
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}
