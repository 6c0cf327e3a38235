//! Deployment: the Kubernetes manifests (`deploy/kubernetes`, kustomize) render with kubectl's
//! kustomize and every object validates against the Kubernetes API's schemas offline
//! (kubernetes-validate, strict: no unknown field); the processes the manifests describe start
//! on this machine with the manifests' own arguments and environment and answer their
//! liveness and readiness probes, and place model stages on the GPU-labelled executor; the
//! container image's build steps run on the host (`deploy/image/check-on-host.sh`: assets,
//! runtime libraries, the non-root command), and podman builds the CPU image and runs
//! `framefusion sql` inside it (`deploy/image/build-with-podman.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use framefusion_tests::cluster::free_port;
use framefusion_tests::{corpus_dir, framefusion_bin, run_python, venv_bin};
use serde_json::Value;

/// The Kubernetes version the objects are validated against.
const KUBERNETES: &str = "1.33.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("no repository root"))
        .to_path_buf()
}

/// `kubectl kustomize deploy/kubernetes/{dir}`, written to a file in `out`.
fn render(dir: &str, out: &Path) -> PathBuf {
    let rendered = Command::new(venv_bin("kubectl"))
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes").join(dir))
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e}"));
    assert!(
        rendered.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let file = out.join(format!("{}.yaml", dir.replace('/', "-")));
    std::fs::write(&file, &rendered.stdout).unwrap_or_else(|e| panic!("{e}"));
    file
}

/// kubernetes-validate's verdict on `file`: success, and its report.
fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("kubernetes-validate: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The objects of a rendered file, as JSON.
fn objects(file: &Path) -> Vec<Value> {
    let text = run_python(
        "reading the rendered manifests",
        "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        &[file.as_os_str()],
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn deployment<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    find(objects, "Deployment", name).unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn manifests_render_and_every_object_validates_against_the_kubernetes_schemas() {
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rendered = BTreeMap::new();
    for dir in [
        "base",
        "overlays/gpu",
        "overlays/s3-example",
        "overlays/autoscaling",
    ] {
        let file = render(dir, out.path());
        let (ok, report) = validate(&file);
        assert!(ok, "{dir} does not validate:\n{report}");
        let objects = objects(&file);
        for o in &objects {
            let id = format!("{}/{}", o["kind"], o["metadata"]["name"])
                .replace('"', "")
                .to_lowercase();
            assert!(
                report.contains(&format!("passed for resource {id}")),
                "{dir}: {id} was not validated:\n{report}"
            );
        }
        rendered.insert(dir, objects);
    }

    // the validator rejects what the API server would: an unknown field fails
    let broken = out.path().join("broken.yaml");
    let text =
        std::fs::read_to_string(out.path().join("base.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&broken, text.replacen("replicas:", "replica:", 1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !validate(&broken).0,
        "a misspelt field must fail validation"
    );

    // every framefusion container: non-root, probes on HTTP endpoints the processes serve
    for (dir, objects) in &rendered {
        for d in objects.iter().filter(|o| o["kind"] == "Deployment") {
            let name = &d["metadata"]["name"];
            assert_eq!(
                d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true,
                "{dir} {name}"
            );
            let c = container(d);
            for probe in ["livenessProbe", "readinessProbe"] {
                assert!(
                    c[probe]["httpGet"]["path"].as_str().is_some(),
                    "{dir} {name}: no {probe}"
                );
            }
        }
    }

    let base = &rendered["base"];
    assert!(find(base, "Deployment", "framefusion-executor-gpu").is_none());
    let gpu = &rendered["overlays/gpu"];
    let pool = deployment(gpu, "framefusion-executor-gpu");
    let spec = &pool["spec"]["template"]["spec"];
    assert_eq!(container(pool)["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(spec["nodeSelector"]["nvidia.com/gpu.present"], "true");
    assert_eq!(spec["tolerations"][0]["key"], "nvidia.com/gpu");
    assert!(
        container(pool)["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":cuda"))
    );
    let cpu = deployment(gpu, "framefusion-executor-cpu");
    assert!(
        container(cpu)["resources"]["limits"]
            .get("nvidia.com/gpu")
            .is_none()
    );
    assert!(
        container(cpu)["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":cpu"))
    );
    // the drain fits in the grace period Kubernetes gives the pod before SIGKILL
    for pool in [pool, cpu] {
        let settings = gpu
            .iter()
            .find(|o| o["kind"] == "ConfigMap")
            .unwrap_or_else(|| panic!("no ConfigMap"));
        let drain: u64 = settings["data"]["FRAMEFUSION_DRAIN_TIMEOUT"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no FRAMEFUSION_DRAIN_TIMEOUT"));
        let grace = pool["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(
            drain < grace,
            "drain {drain} s within the grace period {grace} s"
        );
    }

    // each executor's pool (FRAMEFUSION_EXECUTOR_POOL) is its pod's pool label
    for (name, want) in [
        ("framefusion-executor-cpu", "cpu"),
        ("framefusion-executor-gpu", "gpu"),
    ] {
        let d = deployment(gpu, name);
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["framefusion.io/pool"], want,
            "{name}"
        );
        let env = container(d)["env"].as_array().cloned().unwrap_or_default();
        let var = env
            .iter()
            .find(|e| e["name"] == "FRAMEFUSION_EXECUTOR_POOL")
            .unwrap_or_else(|| panic!("{name}: no FRAMEFUSION_EXECUTOR_POOL"));
        assert_eq!(
            var["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['framefusion.io/pool']"
        );
    }

    // one autoscaler per pool, on the scheduler's pending tasks of that pool, scaling a
    // Deployment of that pool; the scheduler serves the metric on the port it publishes
    let scaled = &rendered["overlays/autoscaling"];
    for pool in ["cpu", "gpu"] {
        let name = format!("framefusion-executor-{pool}");
        let hpa = find(scaled, "HorizontalPodAutoscaler", &name)
            .unwrap_or_else(|| panic!("no autoscaler for the {pool} pool"));
        let target = &hpa["spec"]["scaleTargetRef"];
        assert_eq!(target["kind"], "Deployment");
        let d = deployment(scaled, target["name"].as_str().unwrap_or_default());
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["framefusion.io/pool"],
            pool
        );
        let metric = &hpa["spec"]["metrics"][0]["external"]["metric"];
        assert_eq!(metric["name"], "framefusion_pending_tasks");
        assert_eq!(metric["selector"]["matchLabels"]["pool"], pool);
    }
    let scheduler = deployment(scaled, "framefusion-scheduler");
    let args = container(scheduler)["args"].to_string();
    assert!(args.contains("\"--metrics\",\"0.0.0.0:9464\""), "{args}");
    assert_eq!(
        scheduler["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        "9464"
    );

    let s3 = &rendered["overlays/s3-example"];
    assert!(find(s3, "PersistentVolumeClaim", "framefusion-corpus").is_none());
    for d in s3.iter().filter(|o| o["kind"] == "Deployment") {
        let volumes = d["spec"]["template"]["spec"]["volumes"].to_string();
        assert!(!volumes.contains("framefusion-corpus"), "{volumes}");
    }
    let settings = s3
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap_or_else(|| panic!("no ConfigMap"));
    assert!(
        settings["data"]["FRAMEFUSION_ALLOW_ROOTS"]
            .as_str()
            .is_some_and(|r| r.starts_with("s3://"))
    );
}

/// A GET that does not panic: the status and body, or `None` when nothing answers yet.
fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    framefusion_tests::flight::try_http_request(&format!("127.0.0.1:{port}"), "GET", path, &[], "")
        .ok()
}

/// A process the manifests describe, started here: its container's arguments and
/// environment with the cluster's names and ports mapped onto this machine.
struct Pod {
    name: String,
    child: Child,
    /// container port -> the port it listens on here
    ports: BTreeMap<u64, u16>,
    container: Value,
    log: PathBuf,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Maps the cluster's view onto this machine: the scheduler Service and pod IPs are
/// 127.0.0.1, `/corpus` and `/work` are folders here, ports are free local ones.
struct Node {
    scheduler_port: u16,
    corpus: PathBuf,
    work: tempfile::TempDir,
    settings: BTreeMap<String, String>,
}

impl Node {
    /// `value` as this machine sees it; `work` is the pod's own `/work`.
    fn local(&self, value: &str, ports: &BTreeMap<u64, u16>, work: &Path) -> String {
        let mut v = value
            .replace(
                "framefusion-scheduler:50050",
                &format!("127.0.0.1:{}", self.scheduler_port),
            )
            .replace("framefusion-scheduler", "127.0.0.1")
            .replace("/corpus", &self.corpus.display().to_string())
            .replace("/work", &work.display().to_string());
        for (from, to) in ports {
            if v == from.to_string() {
                v = to.to_string();
            } else if let Some(host) = v.strip_suffix(&format!(":{from}")) {
                v = format!("{host}:{to}");
            }
        }
        v
    }

    fn start(&self, deployment: &Value) -> Pod {
        let name = deployment["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let c = container(deployment).clone();
        let work = self.work.path().join(&name);
        std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{e}"));
        let mut ports = BTreeMap::new();
        for p in c["ports"].as_array().into_iter().flatten() {
            let port = p["containerPort"].as_u64().unwrap_or_default();
            let here = if port == 50050 {
                self.scheduler_port
            } else {
                free_port()
            };
            ports.insert(port, here);
        }
        // the environment: the settings ConfigMap (envFrom), explicit values, the pod IP
        let mut env: BTreeMap<String, String> = self.settings.clone();
        env.insert("FRAMEFUSION_SERVE_USERS".into(), "ana:s3cret".into());
        // the image's own environment (deploy/Containerfile): the catalog in the pod's /data
        env.insert(
            "FRAMEFUSION_CATALOG".into(),
            work.join("catalog.json").display().to_string(),
        );
        for e in c["env"].as_array().into_iter().flatten() {
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("status.podIP") => "127.0.0.1".to_owned(),
                // the downward API: a label of the pod
                Some(field) => {
                    let label = field
                        .strip_prefix("metadata.labels['")
                        .and_then(|l| l.strip_suffix("']"))
                        .unwrap_or_else(|| panic!("{name}: unsupported fieldRef {field}"));
                    deployment["spec"]["template"]["metadata"]["labels"][label]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: the pod has no label {label}"))
                        .to_owned()
                }
                None => e["value"].as_str().unwrap_or_default().to_owned(),
            };
            env.insert(e["name"].as_str().unwrap_or_default().to_owned(), value);
        }
        let env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| {
                let v = self.local(&v, &ports, &work);
                (k, v)
            })
            .collect();
        // $(VAR) references in the arguments, expanded from the environment as the kubelet does
        let args: Vec<String> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let mut a = a.as_str().unwrap_or_default().to_owned();
                for (k, v) in &env {
                    a = a.replace(&format!("$({k})"), v);
                }
                self.local(&a, &ports, &work)
            })
            .collect();
        let log = self.work.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(framefusion_bin())
            .args(&args)
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({args:?}): {e}"));
        Pod {
            name,
            child,
            ports,
            container: c,
            log,
        }
    }
}

impl Pod {
    /// Sends SIGTERM (what Kubernetes sends a pod it removes) and waits for the exit.
    fn terminate(&mut self, limit: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -TERM {}", self.name);
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not exit within {limit:?} of SIGTERM", self.name);
    }

    fn port(&self, probe: &Value) -> u16 {
        let port = &probe["httpGet"]["port"];
        let number = match port.as_u64() {
            Some(n) => n,
            None => self.container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == *port)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{}: no port named {port}", self.name)),
        };
        self.ports[&number]
    }

    /// Polls the container's `probe` until it answers 200 (within `limit`).
    fn wait_for(&mut self, probe: &str, limit: Duration) -> String {
        let spec = self.container[probe].clone();
        let path = spec["httpGet"]["path"].as_str().unwrap_or("/").to_owned();
        let port = self.port(&spec);
        let until = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before its {probe} passed:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            match try_get(port, &path) {
                Some((200, body)) => return body,
                other => last = other,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{}: {probe} GET :{port}{path} did not pass within {limit:?} (last answer {last:?})\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_processes_start_with_their_arguments_and_pass_their_probes() {
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let objects = objects(&render("overlays/gpu", out.path()));
    let corpus = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        corpus_dir().join("carphone_pristine.mp4"),
        corpus.path().join("carphone_pristine.mp4"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(corpus.path().join("runs")).unwrap_or_else(|e| panic!("{e}"));
    let settings = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .and_then(|o| serde_json::from_value(o["data"].clone()).ok())
        .unwrap_or_else(|| panic!("no settings ConfigMap"));
    let node = Node {
        scheduler_port: free_port(),
        corpus: corpus.path().to_path_buf(),
        work: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        settings,
    };

    let mut scheduler = node.start(deployment(&objects, "framefusion-scheduler"));
    scheduler.wait_for("livenessProbe", Duration::from_secs(60));
    // not ready without executors, so its Service must let executors reach it before then
    assert_eq!(
        try_get(scheduler.ports[&50050], "/readyz").map(|(status, _)| status),
        Some(503)
    );
    let service = find(&objects, "Service", "framefusion-scheduler")
        .unwrap_or_else(|| panic!("no scheduler Service"));
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let mut pools = Vec::new();
    for name in ["framefusion-executor-cpu", "framefusion-executor-gpu"] {
        let mut pod = node.start(deployment(&objects, name));
        pod.wait_for("livenessProbe", Duration::from_secs(60));
        // ready = registered with the scheduler
        assert_eq!(
            pod.wait_for("readinessProbe", Duration::from_secs(60))
                .trim(),
            "ready"
        );
        pools.push(pod);
    }
    scheduler.wait_for("readinessProbe", Duration::from_secs(60));
    let mut server = node.start(deployment(&objects, "framefusion-server"));
    server.wait_for("livenessProbe", Duration::from_secs(60));
    server.wait_for("readinessProbe", Duration::from_secs(60));
    assert_eq!(
        framefusion_engine::cluster::registered_executors(&format!(
            "127.0.0.1:{}",
            node.scheduler_port
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}")),
        2
    );

    // the server, configured as the manifests say (users from the Secret, roots from the
    // settings), runs a statement on the cluster over the corpus
    let http = format!("127.0.0.1:{}", server.ports[&8080]);
    let (status, login) = framefusion_tests::flight::http_request(
        &http,
        "POST",
        "/api/login",
        // ana:s3cret
        &[("Authorization", "Basic YW5hOnMzY3JldA==")],
        "",
    );
    assert_eq!(status, 200, "login with a user of the Secret: {login}");
    let token: Value = serde_json::from_str(&login).unwrap_or_else(|e| panic!("{e}"));
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap_or_default());
    let sql = format!(
        "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '{}'; \
         SELECT width, height, cardinality(detect_shots(path)) AS shots FROM v",
        corpus.path().display()
    );
    let rows = statement(&http, &bearer, &sql);
    assert_eq!(rows[0]["width"], 176, "{rows}");
    assert_eq!(rows[0]["height"], 144, "{rows}");
    // ... and the work ran on the executors: their task counters moved
    let tasks: f64 = pools.iter().map(tasks_ok).sum();
    assert!(tasks >= 1.0, "no task ran on the executors");

    // placement: the scheduler sees one executor per pool ...
    let scheduler_metrics = scheduler.ports[&9464];
    wait_for_metric(
        scheduler_metrics,
        "framefusion_executors{pool=\"gpu\"}",
        1.0,
    );
    wait_for_metric(
        scheduler_metrics,
        "framefusion_executors{pool=\"cpu\"}",
        1.0,
    );
    // ... a query that runs no model runs on the CPU executor only ...
    let before = pools.iter().map(tasks_ok).collect::<Vec<_>>();
    let answer = statement(
        &http,
        &bearer,
        "SELECT path, cardinality(detect_shots(path)) AS shots FROM v",
    );
    let after = settled(&pools, &before, 0, &answer);
    assert_eq!(after[1], before[1], "{answer}: a task on the gpu executor");
    // ... a model query's stage on the GPU-labelled executor only ...
    let model = "SELECT path, text_area_ratio(path, 0, 2) AS text FROM v";
    let before = after;
    let on_gpu = statement(&http, &bearer, model);
    let after = settled(&pools, &before, 1, &on_gpu);
    assert_eq!(after[0], before[0], "{on_gpu}: a task on the cpu executor");
    // ... and on the CPU executor when the GPU pool is gone, with the same answer
    let mut gpu = pools.pop().unwrap_or_else(|| panic!("no gpu executor"));
    gpu.terminate(Duration::from_secs(60));
    wait_for_metric(
        scheduler_metrics,
        "framefusion_executors{pool=\"gpu\"}",
        0.0,
    );
    let before = vec![tasks_ok(&pools[0])];
    let on_cpu = statement(&http, &bearer, model);
    settled(&pools, &before, 0, &on_cpu);
    assert_eq!(on_cpu, on_gpu);
    // ... which the scheduler says once
    let log = std::fs::read_to_string(&scheduler.log).unwrap_or_default();
    assert_eq!(
        log.matches("no live gpu executor").count(),
        1,
        "the CPU fallback is said once:\n{log}"
    );
    assert!(on_gpu[0]["text"].as_f64().is_some(), "{on_gpu}");
    drop(server);
    drop(scheduler);
}

/// The executors' finished tasks once `pools[moved]`'s count went past `before` (an
/// executor counts a task a moment after the scheduler saw it finish) and a second more
/// passed for the others to count theirs.
fn settled(pools: &[Pod], before: &[f64], moved: usize, answer: &Value) -> Vec<f64> {
    let until = Instant::now() + Duration::from_secs(10);
    while tasks_ok(&pools[moved]) <= before[moved] {
        assert!(
            Instant::now() < until,
            "{answer}: no task on {}",
            pools[moved].name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    pools.iter().map(tasks_ok).collect()
}

/// The `framefusion_tasks_total{status="ok"}` of an executor pod.
fn tasks_ok(pod: &Pod) -> f64 {
    metric(pod.ports[&9464], "framefusion_tasks_total{status=\"ok\"}").unwrap_or(0.0)
}

/// The value of the sample `series` (name and labels) at `/metrics` on `port`.
fn metric(port: u16, series: &str) -> Option<f64> {
    framefusion_tests::flight::metric_sample(&format!("127.0.0.1:{port}"), series)
}

/// Waits (up to 30 s) until the sample `series` at `/metrics` on `port` reads `value`.
fn wait_for_metric(port: u16, series: &str, value: f64) {
    let until = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < until {
        last = metric(port, series);
        if last == Some(value) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{series} is {last:?}, not {value}, after 30 s");
}

/// The rows of the JSON answer of `sql` from the server's `/api/sql` (asserting success).
fn statement(http: &str, bearer: &str, sql: &str) -> Value {
    let (status, answer) = framefusion_tests::flight::http_request(
        http,
        "POST",
        "/api/sql",
        &[("Authorization", bearer)],
        sql,
    );
    assert_eq!(status, 200, "{sql}: {answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}"));
    answer["rows"].clone()
}

#[test]
fn the_image_build_steps_run_on_the_host() {
    let out = Command::new("bash")
        .arg(repo().join("deploy/image/check-on-host.sh"))
        .arg(framefusion_bin())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("every library the binary links comes with the runtime packages"),
        "{stderr}"
    );
    // the image's command read the corpus and ran a model as the non-root user
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        rows.first().copied(),
        Some("file,width,height,text"),
        "{stdout}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("bikes.mp4,640,272,")),
        "{stdout}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("carphone_pristine.mp4,176,144,0.0")),
        "{stdout}"
    );
}

/// `deploy/image/build-with-podman.sh` with `args`: its stdout, asserting success.
fn podman_script(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("deploy/image/build-with-podman.sh"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "build-with-podman.sh {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_cpu_image_builds_with_podman_and_runs_sql_inside() {
    // the Containerfile's asset and runtime stages, built by podman on a debootstrapped
    // Debian base, with this build's binary in place of the builder stage (the script says
    // why); then the image's own command runs `framefusion sql` on sample videos
    let tag = format!("localhost/framefusion:test-{}", std::process::id());
    let binary = framefusion_bin();
    podman_script(&["build".as_ref(), binary.as_os_str(), tag.as_ref()]);
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            // the image, then its stages' (untagged) images
            for args in [
                vec!["rmi", "-f", self.0.as_str()],
                vec!["image", "prune", "-f"],
            ] {
                let _ = Command::new("bash")
                    .arg(repo().join("deploy/image/build-with-podman.sh"))
                    .arg("podman")
                    .args(args)
                    .output();
            }
        }
    }
    let _image = Image(tag.clone());
    let corpus = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for f in ["bikes.mp4", "carphone_pristine.mp4"] {
        std::fs::copy(corpus_dir().join(f), corpus.path().join(f))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let volume = format!("{}:/corpus:ro", corpus.path().display());
    let sql = "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/corpus'; \
               SELECT regexp_replace(path, '.*/', '') AS file, width, height, \
               cardinality(detect_shots(path)) AS shots, \
               round(text_area_ratio(path, 0, 1), 6) AS text FROM v ORDER BY file";
    let out = podman_script(
        &[
            "podman",
            "run",
            "--rm",
            "-e",
            "RUST_LOG=warn",
            "-v",
            volume.as_str(),
            tag.as_str(),
            "sql",
            "--format",
            "csv",
            sql,
        ]
        .map(std::ffi::OsStr::new),
    );
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows.first().copied(),
        Some("file,width,height,shots,text"),
        "{out}"
    );
    // the same answers as on the host: PySceneDetect's shot counts, text found by the model
    assert!(
        rows.iter().any(|r| r.starts_with("bikes.mp4,640,272,6,0.")),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("carphone_pristine.mp4,176,144,1,0.")),
        "{out}"
    );
    // the image runs as its non-root user
    let id = podman_script(
        &[
            "podman",
            "run",
            "--rm",
            "--entrypoint",
            "id",
            tag.as_str(),
            "-u",
        ]
        .map(std::ffi::OsStr::new),
    );
    assert_eq!(id.trim(), "10001");
}
