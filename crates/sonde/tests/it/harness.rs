//! Starting, stopping and killing the real binary, and reading what it wrote.

#![allow(dead_code)]

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `sonde serve` on 127.0.0.1 with a port chosen by the OS. Killed on drop.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) data_dir: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server over `data_dir` with extra flags, and waits for `/health`.
    pub(crate) async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, extra, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    pub(crate) async fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, url) = spawn(data_dir, &extra, &env);
        let s = Server {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
            extra,
            env,
        };
        s.wait_healthy().await;
        s
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {} did not become healthy", self.url);
    }

    /// `{url}{path}`.
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// SIGTERM, and wait for the graceful shutdown (which flushes every buffer).
    pub(crate) async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = tokio::task::spawn_blocking(move || wait_timeout(&mut c, Duration::from_secs(120)))
                .await
                .unwrap()
                .expect("graceful shutdown timed out");
            assert!(status.success(), "server exited with {status}");
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, no goodbye.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Starts the server again over the same data directory (a new port).
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        let (child, url) = spawn(&self.data_dir, &self.extra, &self.env);
        self.child = Some(child);
        self.url = url;
        self.wait_healthy().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data_dir: &Path, extra: &[String], env: &[(String, String)]) -> (Child, String) {
    // SONDE_TEST_BIN runs the tests against another build (the load test against a release one).
    let bin = std::env::var("SONDE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sonde").to_string());
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--grpc-listen")
        .arg("127.0.0.1:0")
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(
            "SONDE_LOG",
            std::env::var("SONDE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(if std::env::var("SONDE_TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn sonde");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read listening line");
    let url = line
        .trim()
        .strip_prefix("sonde listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, url)
}

fn wait_timeout(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends a request and returns status and JSON body (panics on transport errors).
pub(crate) async fn send_json(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Every event in the cataloged segments of a dataset, as batches (in segment order).
pub(crate) fn read_segments(data_dir: &Path, dataset: &str) -> Vec<RecordBatch> {
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("catalog.json")).expect("catalog")).expect("catalog json");
    let mut out = Vec::new();
    let Some(segments) = catalog["datasets"][dataset]["segments"].as_array() else {
        return out;
    };
    for seg in segments {
        let path = data_dir.join(seg["path"].as_str().unwrap());
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let mut rows = 0;
        for b in reader {
            let b = b.unwrap();
            rows += b.num_rows();
            out.push(b);
        }
        assert_eq!(
            rows as u64,
            seg["rows"].as_u64().unwrap(),
            "segment {} row count",
            path.display()
        );
    }
    out
}

/// How often each value of the `id` column occurs in a dataset's cataloged segments.
pub(crate) fn id_counts(data_dir: &Path, dataset: &str) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for b in read_segments(data_dir, dataset) {
        for id in column_json(&b, "id").expect("an id column") {
            *seen.entry(id.as_str().expect("string ids").to_string()).or_default() += 1;
        }
    }
    seen
}

/// A column's values as JSON (null for nulls), for comparisons.
pub(crate) fn column_json(batch: &RecordBatch, name: &str) -> Option<Vec<Value>> {
    use arrow::array::*;
    let col = batch.column_by_name(name)?;
    let n = col.len();
    let v = (0..n)
        .map(|i| {
            if col.is_null(i) {
                return Value::Null;
            }
            if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
                Value::from(a.value(i))
            } else if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
                Value::from(a.value(i))
            } else if let Some(a) = col.as_any().downcast_ref::<Float64Array>() {
                Value::from(a.value(i))
            } else if let Some(a) = col.as_any().downcast_ref::<BooleanArray>() {
                Value::from(a.value(i))
            } else if let Some(a) = col.as_any().downcast_ref::<TimestampMicrosecondArray>() {
                Value::from(a.value(i))
            } else {
                panic!("unexpected type {} for {name}", col.data_type())
            }
        })
        .collect();
    Some(v)
}

/// An independent flattening of a generated event (objects → dotted names, arrays → JSON text,
/// nulls dropped), written here rather than borrowed from `sonde-model` so that the test does
/// not check the model against itself.
pub(crate) fn flatten_expected(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    for (k, x) in v.as_object().unwrap() {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match x {
            Value::Null => {}
            Value::Object(_) => flatten_expected(&name, x, out),
            Value::Array(_) => out.push((name, Value::String(x.to_string()))),
            _ => out.push((name, x.clone())),
        }
    }
}
