//! The deployment files agree with the binary: `helm/sable` lints, renders and validates
//! (`helm/tests/chart.py`, on Helm's own engine and the Kubernetes schemas), its pods run
//! as local processes exactly as rendered, and `deploy/compose.yaml` is valid Compose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use sable_testkit::{
    ChildProcess, FakeProvider, NatsServer, TestDatabase, run_to_completion, wait_for,
    workspace_root,
};
use serde_json::{Value, json};

use crate::support::{READY_TIMEOUT, postgres_server, sable_binary};

/// Runs `helm/tests/chart.py ARGS` and returns its stdout; its report goes to stderr.
async fn chart_py(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("python3")
        .arg("helm/tests/chart.py")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .await
        .context("cannot run python3 (scripts/test.sh installs the chart tools)")?;
    // Helm logs each symlinked folder of the chart (files/ → config/, agents/, skills/).
    let stderr: Vec<&str> = std::str::from_utf8(&output.stderr)?
        .lines()
        .filter(|line| !line.contains("found symbolic link"))
        .collect();
    let stdout = String::from_utf8(output.stdout)?;
    anyhow::ensure!(
        output.status.success(),
        "chart.py {} failed:\n{}\n{stdout}",
        args.join(" "),
        stderr.join("\n")
    );
    Ok(stdout)
}

/// A check of `chart.py` whose report is printed.
async fn chart_check(command: &str) -> anyhow::Result<()> {
    let report = chart_py(&[command]).await?;
    eprintln!("{report}");
    anyhow::ensure!(
        !report.trim().is_empty(),
        "chart.py {command} printed nothing"
    );
    Ok(())
}

#[tokio::test]
async fn the_chart_lints_strictly_and_renders_three_values_files_valid_for_kubernetes_1_30()
-> anyhow::Result<()> {
    chart_check("lint").await
}

#[tokio::test]
async fn every_setting_the_binary_reads_is_settable_from_the_chart_values() -> anyhow::Result<()> {
    chart_check("settings").await
}

#[tokio::test]
async fn workers_scale_on_cpu_or_on_the_jetstream_backlog_and_have_disruption_budgets()
-> anyhow::Result<()> {
    chart_check("scaling").await
}

#[tokio::test]
async fn the_compose_stack_validates_against_the_compose_specification() -> anyhow::Result<()> {
    chart_check("compose").await
}

/// One rendered pod started as a local process: where its ports really are.
struct LocalPod {
    name: String,
    process: ChildProcess,
    pod: Value,
    /// Container port → the address the local process serves it on.
    ports: BTreeMap<u64, String>,
    /// The environment it was started with.
    env: Vec<(String, String)>,
}

/// The variables that hold a listening address, with the line the role prints once it
/// listens there (`{role}` is the subcommand), in the order the roles print them.
const LISTEN_VARIABLES: [(&str, &str); 3] = [
    (
        "SABLE_MCP_SIDECAR_ADDR",
        "sable {role} listening on grpc://",
    ),
    ("SABLE_GATEWAY_ADDR", "sable {role} listening on http://"),
    ("SABLE_METRICS_ADDR", "sable {role} metrics on http://"),
];

/// Host names of the rendered Services and of the outside services (NATS, Postgres), each
/// with the local address standing in for it.
struct HostMap {
    replacements: Vec<(String, String)>,
}

impl HostMap {
    fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (from, to) in &self.replacements {
            text = text.replace(from, to);
        }
        text
    }

    /// A Service reached as `name[.namespace[.svc[.cluster.local]]]:port`.
    fn add_service(&mut self, name: &str, namespace: &str, port: u64, local: &str) {
        let long = [
            format!("{name}.{namespace}.svc.cluster.local"),
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}"),
            name.to_owned(),
        ];
        for host in long {
            self.replacements
                .push((format!("//{host}:{port}"), format!("//{local}")));
            self.replacements
                .push((format!("@{host}:{port}"), format!("@{local}")));
        }
    }
}

fn objects_of<'a>(
    objects: &'a [Value],
    kind: &'a str,
) -> impl Iterator<Item = &'a Value> + use<'a> {
    objects.iter().filter(move |object| object["kind"] == kind)
}

fn named<'a>(objects: &'a [Value], kind: &'a str, name: &str) -> anyhow::Result<&'a Value> {
    objects_of(objects, kind)
        .find(|object| object["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} rendered"))
}

/// The pod's environment as Kubernetes would give it: `envFrom` Secrets, then `env`.
fn pod_env(objects: &[Value], container: &Value) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["secretRef"]["name"].as_str().unwrap_or_default();
        let secret = named(objects, "Secret", name)?;
        for (key, value) in secret["stringData"].as_object().into_iter().flatten() {
            env.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let value = variable["value"]
            .as_str()
            .context("env from anything but a value is not rendered by the chart")?;
        env.insert(
            variable["name"].as_str().unwrap_or_default().to_owned(),
            value.to_owned(),
        );
    }
    Ok(env.into_iter().collect())
}

/// Writes each volume of the pod into `dir` (ConfigMaps with their items, emptyDirs
/// empty) and returns the mount path → local folder pairs, longest first.
fn write_volumes(
    objects: &[Value],
    pod: &Value,
    container: &Value,
    dir: &Path,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap_or_default();
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|volume| volume["name"] == name)
            .with_context(|| format!("volume {name} is mounted but not declared"))?;
        let local = dir.join(name);
        std::fs::create_dir_all(&local)?;
        if let Some(source) = volume.get("configMap") {
            let config_map = named(
                objects,
                "ConfigMap",
                source["name"].as_str().unwrap_or_default(),
            )?;
            let data = config_map["data"]
                .as_object()
                .context("a ConfigMap without data")?;
            let items: Vec<(String, String)> = match source["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|item| {
                        (
                            item["key"].as_str().unwrap_or_default().to_owned(),
                            item["path"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                None => data.keys().map(|key| (key.clone(), key.clone())).collect(),
            };
            for (key, path) in items {
                let content = data.get(&key).and_then(Value::as_str).with_context(|| {
                    format!("item {key} is not in ConfigMap {}", source["name"])
                })?;
                let target = local.join(&path);
                std::fs::create_dir_all(target.parent().context("a file has a folder")?)?;
                std::fs::write(target, content)?;
            }
        }
        mounts.push((
            mount["mountPath"].as_str().unwrap_or_default().to_owned(),
            local,
        ));
    }
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    Ok(mounts)
}

/// Rewrites mount paths to their local folders in `text`, in one pass (a local folder may
/// itself lie below a mount path such as `/tmp`).
fn remap_paths(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut text = text.to_owned();
    for (at, (mount, _)) in mounts.iter().enumerate() {
        text = text.replace(mount.as_str(), &format!("\u{0}{at}\u{0}"));
    }
    for (at, (_, local)) in mounts.iter().enumerate() {
        text = text.replace(&format!("\u{0}{at}\u{0}"), &local.display().to_string());
    }
    text
}

fn rewrite_files(dir: &Path, rewrite: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rewrite_files(&path, rewrite)?;
        } else {
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(&path, rewrite(&text))?;
        }
    }
    Ok(())
}

/// The rendered container's command, with the image's `sable` replaced by the one cargo
/// built for the tests.
fn local_command(container: &Value) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let command: Vec<&str> = container["command"]
        .as_array()
        .context("the chart renders an explicit command")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    anyhow::ensure!(
        command.len() == 1 && Path::new(command[0]).file_name() == Some("sable".as_ref()),
        "the container runs {command:?}, not the sable binary"
    );
    let args = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    Ok((sable_binary(), args))
}

/// Everything a pod of `pod` needs locally: command, environment (hosts and paths
/// mapped, listening addresses on port 0), and the listen variables it carries.
struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (container port, line prefix) for each listening address, in printing order.
    listens: Vec<(u64, String)>,
}

fn prepare(
    objects: &[Value],
    pod: &Value,
    hosts: &HostMap,
    dir: &Path,
) -> anyhow::Result<Prepared> {
    let container = &pod["containers"][0];
    let (program, args) = local_command(container)?;
    let role = args.first().cloned().unwrap_or_default();
    let mounts = write_volumes(objects, pod, container, dir)?;
    let rewrite = |text: &str| hosts.apply(&remap_paths(text, &mounts));
    rewrite_files(dir, &rewrite)?;
    let mut env = Vec::new();
    let mut listens = Vec::new();
    for (key, value) in pod_env(objects, container)? {
        let listen = LISTEN_VARIABLES.iter().position(|(name, _)| *name == key);
        if let Some(at) = listen {
            let port: u64 = value
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .with_context(|| format!("{key}={value} names no port"))?;
            listens.push((at, port, LISTEN_VARIABLES[at].1.replace("{role}", &role)));
            env.push((key, "127.0.0.1:0".to_owned()));
        } else {
            env.push((key, rewrite(&value)));
        }
    }
    listens.sort();
    Ok(Prepared {
        program,
        args,
        env,
        listens: listens
            .into_iter()
            .map(|(_, port, line)| (port, line))
            .collect(),
    })
}

/// Variables of the test runner that would reach the child and are no part of the pod.
const NOT_IN_THE_POD: [&str; 6] = [
    "SABLE_DATABASE_URL",
    "SABLE_NATS_URL",
    "SABLE_CONFIG",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "SABLE_MODEL",
];

async fn start_pod(
    name: &str,
    objects: &[Value],
    pod: &Value,
    hosts: &HostMap,
    dir: &Path,
) -> anyhow::Result<LocalPod> {
    let prepared = prepare(objects, pod, hosts, dir)?;
    let args: Vec<&str> = prepared.args.iter().map(String::as_str).collect();
    let mut process = ChildProcess::spawn_without(
        name,
        &prepared.program,
        &args,
        &prepared.env,
        &NOT_IN_THE_POD,
        dir,
    )?;
    let mut ports = BTreeMap::new();
    for (port, line) in &prepared.listens {
        let address = process.wait_for_line(line, READY_TIMEOUT).await?;
        let address = address.split('/').next().unwrap_or_default().to_owned();
        ports.insert(*port, address);
    }
    Ok(LocalPod {
        name: name.to_owned(),
        process,
        pod: pod.clone(),
        ports,
        env: prepared.env,
    })
}

/// The local address of a probe's port (a name or a number of the container's ports).
fn probe_address(local: &LocalPod, probe: &Value) -> anyhow::Result<String> {
    let container = &local.pod["containers"][0];
    let port = &probe["httpGet"]["port"];
    let number = match port.as_u64() {
        Some(number) => number,
        None => container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|candidate| candidate["name"] == *port)
            .and_then(|candidate| candidate["containerPort"].as_u64())
            .with_context(|| format!("{}: probe port {port} is no container port", local.name))?,
    };
    local
        .ports
        .get(&number)
        .cloned()
        .with_context(|| format!("{}: nothing listens on container port {number}", local.name))
}

/// Polls both rendered probes until each answers 2xx.
async fn wait_until_probes_pass(http: &reqwest::Client, local: &LocalPod) -> anyhow::Result<()> {
    let container = &local.pod["containers"][0];
    for kind in ["readinessProbe", "livenessProbe"] {
        let probe = &container[kind];
        let path = probe["httpGet"]["path"].as_str().context("an HTTP probe")?;
        let url = format!("http://{}{path}", probe_address(local, probe)?);
        let last = std::sync::Mutex::new(String::new());
        wait_for(
            &format!("{} {kind} {url}", local.name),
            READY_TIMEOUT,
            || async {
                let response = http.get(&url).send().await;
                let status = response.as_ref().map(reqwest::Response::status);
                *last.lock().expect("not poisoned") = format!("{status:?}");
                status.ok().filter(StatusCode::is_success)
            },
        )
        .await
        .with_context(|| {
            format!(
                "last answer {}; log:\n{}",
                last.lock().expect("not poisoned"),
                local.process.log_tail()
            )
        })?;
    }
    Ok(())
}

/// The ports of the rendered Services that select `local`'s pod, mapped to its addresses.
fn map_services(objects: &[Value], local: &LocalPod, labels: &Value, hosts: &mut HostMap) {
    let container = &local.pod["containers"][0];
    for service in objects_of(objects, "Service") {
        let selects = service["spec"]["selector"]
            .as_object()
            .is_some_and(|selector| selector.iter().all(|(key, value)| labels[key] == *value));
        if !selects {
            continue;
        }
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let target = &port["targetPort"];
            let number = target.as_u64().or_else(|| {
                container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|candidate| candidate["name"] == *target)
                    .and_then(|candidate| candidate["containerPort"].as_u64())
            });
            if let (Some(local_address), Some(service_port)) = (
                number.and_then(|number| local.ports.get(&number)),
                port["port"].as_u64(),
            ) {
                hosts.add_service(name, "sable", service_port, local_address);
            }
        }
    }
}

/// Fails when the pod's environment or its sable.toml still names an in-chart Service
/// (`://sable-…`) that no local process was mapped to.
fn assert_no_unmapped_service(local: &LocalPod) -> anyhow::Result<()> {
    let mut texts: Vec<(String, String)> = local.env.clone();
    if let Some((_, path)) = local.env.iter().find(|(key, _)| key == "SABLE_CONFIG") {
        texts.push((path.clone(), std::fs::read_to_string(path)?));
    }
    for (source, text) in texts {
        anyhow::ensure!(
            !text.contains("://sable-"),
            "{}: {source} names a Service no local process stands for: {text}",
            local.name
        );
    }
    Ok(())
}

/// `shutdown_grace_ms` as the process reads it: its sable.toml, then the environment.
fn effective_shutdown_grace_ms(env: &[(String, String)]) -> anyhow::Result<u64> {
    let variable = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    if let Some(value) = variable("SABLE_SHUTDOWN_GRACE_MS") {
        return Ok(value.parse()?);
    }
    let path = variable("SABLE_CONFIG").context("the pod names its config file")?;
    let config: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    config
        .get("shutdown_grace_ms")
        .and_then(toml::Value::as_integer)
        .and_then(|value| u64::try_from(value).ok())
        .with_context(|| format!("{path} sets no shutdown_grace_ms"))
}

/// Runs the migration Job's container to completion, as the pre-install hook would.
async fn run_migration_job(objects: &[Value], hosts: &HostMap, dir: &Path) -> anyhow::Result<()> {
    let job = named(objects, "Job", "sable-migrate")?;
    let hooks = job["metadata"]["annotations"]["helm.sh/hook"]
        .as_str()
        .unwrap_or_default();
    assert!(
        hooks.contains("pre-install") && hooks.contains("pre-upgrade"),
        "the migration Job is not a pre-install/pre-upgrade hook: {hooks}"
    );
    let prepared = prepare(objects, &job["spec"]["template"]["spec"], hosts, dir)?;
    let mut command = tokio::process::Command::new(&prepared.program);
    for variable in NOT_IN_THE_POD {
        command.env_remove(variable);
    }
    let output = command
        .args(&prepared.args)
        .envs(prepared.env.iter().map(|(key, value)| (key, value)))
        .current_dir(dir)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the migration Job failed: {stderr}"
    );
    assert!(
        stderr.contains("applied"),
        "migrate applied nothing: {stderr}"
    );
    Ok(())
}

/// The chart's values for this test: its own database and NATS prefix behind the
/// in-cluster host name `postgres`, and the fake provider.
fn test_values(in_cluster_database: &str, prefix: &str, provider: &FakeProvider) -> Value {
    json!({
        "database": {"url": in_cluster_database},
        "secrets": {"providerKeys": {"OPENAI_API_KEY": "test-key"}},
        "settings": {
            "nats_prefix": prefix,
            "openai_base_url": provider.base_url,
            "model": "fake-model",
            // Four roles per scenario, three scenarios beside the other tests: stay well
            // under Postgres's 100 connections.
            "db_max_connections": 2,
            "log_format": "text",
        },
    })
}

/// `over` merged into `base`, objects key by key (as Helm merges values files).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// The gateway's Service as a client reaches it, with a fresh org's key.
struct GatewayClient {
    url: String,
    key: String,
    http: reqwest::Client,
}

/// Posts a message through the rendered gateway Service and returns the client and the
/// reply's text.
async fn answer_through_the_gateway_service(
    objects: &[Value],
    hosts: &HostMap,
    gateway: &LocalPod,
) -> anyhow::Result<(GatewayClient, String)> {
    let service = named(objects, "Service", "sable-gateway")?;
    let port = service["spec"]["ports"][0]["port"]
        .as_u64()
        .context("a port")?;
    let in_cluster = format!("http://sable-gateway:{port}");
    let url = hosts.apply(&in_cluster);
    anyhow::ensure!(
        url != in_cluster,
        "the gateway Service leads to no local process"
    );
    // As NOTES.txt says: `sable admin` inside a gateway pod.
    let env = &gateway.env;
    let org = run_to_completion(&sable_binary(), &["admin", "org", "create", "acme"], env).await?;
    let args = ["admin", "key", "create", "--org", &org];
    let key = run_to_completion(&sable_binary(), &args, env).await?;
    let http = reqwest::Client::new();
    let reply: Value = http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(&key)
        .json(&json!({"text": "hello from the chart", "wait": true}))
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .json()
        .await?;
    let text = reply["reply"]["text"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no reply: {reply}\n{}", gateway.process.log_tail()))?;
    Ok((GatewayClient { url, key, http }, text))
}

/// Waits until the gateway lists each of `servers` connected, through the sidecar its
/// rendered environment names.
async fn wait_for_mcp_servers(client: &GatewayClient, servers: &[&str]) -> anyhow::Result<()> {
    let url = format!("{}/v1/mcp/servers", client.url);
    wait_for("the MCP servers to connect", READY_TIMEOUT, || async {
        let listed: Value = client
            .http
            .get(&url)
            .bearer_auth(&client.key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let connected = |name: &str| {
            listed["servers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|server| server["name"] == name && server["state"] == "connected")
        };
        servers.iter().all(|name| connected(name)).then_some(())
    })
    .await
}

/// A values file whose rendered pods a test runs.
struct Scenario {
    values_file: &'static str,
    /// Merged over the file and the test's own values.
    overrides: Value,
    /// The file names `secrets.existingSecret`: the test makes that Secret.
    existing_secret: Option<&'static str>,
    /// The Deployments the file renders.
    deployments: &'static [&'static str],
    /// MCP servers its config names, which the gateway must list connected.
    mcp_servers: &'static [&'static str],
}

/// Renders `scenario`'s values file for this test's own database, NATS prefix and fake
/// provider, runs the migration Job and every Deployment as local processes (the
/// sidecar first: the others are given its Service's address), waits for their probes,
/// answers a turn through the gateway's Service, then stops each role on SIGTERM within
/// its rendered grace, which must exceed the `shutdown_grace_ms` it reads.
async fn run_rendered_pods(scenario: Scenario) -> anyhow::Result<()> {
    sable_llm::install_crypto_provider();
    let database = TestDatabase::create().await?;
    let nats = NatsServer::start().await?;
    let provider = FakeProvider::start().await?;
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let server = postgres_server(&database.url)?;
    let in_cluster_database =
        database
            .url
            .replacen(&format!("@{}/", server.as_written), "@postgres:5432/", 1);
    anyhow::ensure!(in_cluster_database != database.url, "unexpected URL");
    let mut values = test_values(&in_cluster_database, &prefix, &provider);
    merge(&mut values, &scenario.overrides);
    let rendered = chart_py(&["render", scenario.values_file, &values.to_string()]).await?;
    let mut objects: Vec<Value> = serde_json::from_str(&rendered)?;
    if let Some(name) = scenario.existing_secret {
        assert!(
            objects_of(&objects, "Secret").next().is_none(),
            "with an existing Secret the chart renders none"
        );
        objects.push(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"SABLE_DATABASE_URL": in_cluster_database, "OPENAI_API_KEY": "test-key"},
        }));
    }
    let local_nats = nats.url().replacen("nats:", "", 1);
    let mut hosts = HostMap {
        replacements: vec![
            ("@postgres:5432/".into(), format!("@{}/", server.as_written)),
            ("//nats:4222".into(), local_nats.clone()),
            ("//nats.messaging.svc.cluster.local:4222".into(), local_nats),
        ],
    };
    let root = std::env::temp_dir().join(format!("sable-chart-{}", uuid::Uuid::new_v4().simple()));
    // An empty database, as on a first install: the migration Job must create the schema.
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .execute(&database.owner_pool().await?)
        .await?;
    run_migration_job(&objects, &hosts, &root.join("migrate")).await?;

    let mut deployments: Vec<&Value> = objects_of(&objects, "Deployment").collect();
    deployments.sort_by_key(|deployment| deployment["metadata"]["name"] != "sable-mcp-sidecar");
    let mut names: Vec<&str> = deployments
        .iter()
        .filter_map(|deployment| deployment["metadata"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, scenario.deployments, "{}", scenario.values_file);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut pods = Vec::new();
    for deployment in &deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
        let template = &deployment["spec"]["template"];
        let dir = root.join(name);
        let local = start_pod(name, &objects, &template["spec"], &hosts, &dir).await?;
        map_services(
            &objects,
            &local,
            &template["metadata"]["labels"],
            &mut hosts,
        );
        pods.push((local, deployment));
    }
    for (local, _) in &pods {
        assert_no_unmapped_service(local)?;
        wait_until_probes_pass(&http, local).await?;
    }
    let (gateway, _) = pods
        .iter()
        .find(|(local, _)| local.name == "sable-gateway")
        .context("a gateway")?;
    let (client, reply) = answer_through_the_gateway_service(&objects, &hosts, gateway).await?;
    assert_eq!(reply, "echo: hello from the chart");
    wait_for_mcp_servers(&client, scenario.mcp_servers).await?;

    for (mut local, deployment) in pods {
        let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .context("terminationGracePeriodSeconds")?;
        let shutdown_grace_ms = effective_shutdown_grace_ms(&local.env)?;
        assert!(
            grace * 1000 > shutdown_grace_ms,
            "{}: terminationGracePeriodSeconds {grace} does not exceed shutdown_grace_ms {shutdown_grace_ms}",
            local.name
        );
        let clean = local.process.terminate(Duration::from_secs(grace)).await?;
        assert!(
            clean,
            "{} did not stop cleanly on SIGTERM:\n{}",
            local.name,
            local.process.log_tail()
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

const EVERY_ROLE: &[&str] = &[
    "sable-cron",
    "sable-gateway",
    "sable-mcp-sidecar",
    "sable-worker",
];

#[tokio::test]
async fn the_rendered_pods_of_the_default_values_run_become_ready_and_answer_a_turn()
-> anyhow::Result<()> {
    run_rendered_pods(Scenario {
        values_file: "default-values.yaml",
        overrides: json!({}),
        existing_secret: None,
        deployments: EVERY_ROLE,
        mcp_servers: &[],
    })
    .await
}

/// External NATS and Postgres behind an existing Secret, KEDA, an MCP server in the
/// sidecar (mcp-server-time over stdio). Span export and Langfuse are turned off: their
/// endpoints are outside this machine.
#[tokio::test]
async fn the_rendered_pods_of_the_production_values_run_with_an_existing_secret_and_answer()
-> anyhow::Result<()> {
    run_rendered_pods(Scenario {
        values_file: "production-values.yaml",
        overrides: json!({"otel": {"endpoint": ""}, "settings": {"langfuse_host": null}}),
        existing_secret: Some("sable-production"),
        deployments: EVERY_ROLE,
        mcp_servers: &["time"],
    })
    .await
}

#[tokio::test]
async fn the_rendered_pods_of_the_dev_values_run_become_ready_and_answer_a_turn()
-> anyhow::Result<()> {
    run_rendered_pods(Scenario {
        values_file: "dev-values.yaml",
        overrides: json!({}),
        existing_secret: None,
        deployments: &["sable-gateway", "sable-worker"],
        mcp_servers: &[],
    })
    .await
}

#[tokio::test]
async fn the_rendered_scaled_object_watches_the_stream_and_consumer_the_workers_use()
-> anyhow::Result<()> {
    let values =
        json!({"settings": {"nats_prefix": "acme-prod"}, "worker": {"keda": {"enabled": true}}});
    let rendered = chart_py(&["render", "default-values.yaml", &values.to_string()]).await?;
    let objects: Vec<Value> = serde_json::from_str(&rendered)?;
    let scaled = named(&objects, "ScaledObject", "sable-worker")?;
    let trigger = &scaled["spec"]["triggers"][0]["metadata"];
    let names = sable_bus::BusNames::new("acme-prod")?;
    assert_eq!(trigger["stream"], names.turns_stream());
    assert_eq!(trigger["consumer"], sable_bus::WORKERS_CONSUMER);
    Ok(())
}
