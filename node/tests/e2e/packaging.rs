//! packaging/, checked against the node it packages: the Kubernetes
//! manifests (parsed as YAML), the systemd unit and the Containerfile. Every
//! `fusi-node up` command line they hold is handed to the real binary's
//! parser (`fusi-node up ARGS --help` exits 0 only when every flag exists
//! and every value parses), and what ties the pieces together is checked:
//! the bootstrap name is the headless service's, the Secret is mounted where
//! `--mesh-key` points, the ports agree, nothing runs as root. The image
//! itself is built where podman or buildah can get its base images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

use super::repo;

fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fusi-node"))
}

fn packaging() -> PathBuf {
    repo().join("packaging")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Hands `args` (after `fusi-node`) to the real parser, with `--help` last:
/// clap parses every value before it reaches `--help`, so this exits 0 only
/// if each flag exists and each value is valid.
fn assert_the_node_parses(what: &str, args: &[String]) {
    let out = Command::new(node_bin())
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("run fusi-node");
    assert!(
        out.status.success(),
        "{what}: `fusi-node {}` is refused:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--flag=value` and `--flag value` as pairs (a flag without a value, as
/// `--mdns`, gets an empty one), after the subcommand.
fn flags(args: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = args.iter().skip(1).peekable();
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            panic!("{arg:?} is not a flag in {args:?}");
        };
        match flag.split_once('=') {
            Some((name, value)) => out.insert(name.to_owned(), value.to_owned()),
            None => {
                let value = rest.next_if(|v| !v.starts_with("--")).cloned();
                out.insert(flag.to_owned(), value.unwrap_or_default())
            }
        };
    }
    out
}

/// Every YAML document under packaging/k8s, by file.
fn manifests() -> Vec<(String, Yaml)> {
    let dir = packaging().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = YamlLoader::load_from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
        docs.extend(parsed.into_iter().map(|d| (name.clone(), d)));
    }
    docs
}

fn kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in packaging/k8s");
    found[0]
}

fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

/// The entry of `items` whose `name` is `name`.
fn named<'a>(items: &'a [Yaml], name: &str, what: &str) -> &'a Yaml {
    items
        .iter()
        .find(|i| i["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {what} named {name:?}"))
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    selector
        .as_hash()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[text(k, "a label")] == *v))
}

/// The TCP port at the end of a `/ip4/ADDR/tcp/PORT` multiaddr.
fn tcp_port(multiaddr: &str) -> i64 {
    multiaddr
        .rsplit_once("/tcp/")
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no TCP port in {multiaddr:?}"))
}

#[test]
fn the_kubernetes_manifests_give_the_node_what_it_needs() {
    let docs = manifests();
    let namespace = text(
        &kind(&docs, "Namespace")["metadata"]["name"],
        "the namespace",
    );
    for (file, doc) in &docs {
        let ns = &doc["metadata"]["namespace"];
        if doc["kind"].as_str() != Some("Namespace") && !ns.is_badvalue() {
            assert_eq!(ns.as_str(), Some(namespace), "{file}: its namespace");
        }
    }
    // kustomization.yaml applies the manifests, not the Secret's template.
    let kustomization = kind(&docs, "Kustomization");
    let resources: Vec<&str> = list(&kustomization["resources"], "resources")
        .iter()
        .map(|r| text(r, "a resource"))
        .collect();
    for resource in &resources {
        assert!(
            packaging().join("k8s").join(resource).is_file(),
            "{resource}"
        );
    }
    assert!(!resources.iter().any(|r| r.contains("secret")));

    // The headless service.
    let service = kind(&docs, "Service");
    let svc = text(&service["metadata"]["name"], "the service's name");
    assert_eq!(
        service["spec"]["clusterIP"].as_str(),
        Some("None"),
        "headless"
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "pods starting together must see each other before they are ready"
    );
    let svc_port = &list(&service["spec"]["ports"], "the service's ports")[0];

    // The StatefulSet and its one container.
    let set = kind(&docs, "StatefulSet");
    let spec = &set["spec"];
    assert_eq!(spec["serviceName"].as_str(), Some(svc));
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], labels));
    assert!(selects(&service["spec"]["selector"], labels));
    let containers = list(&pod["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let env = list(&container["env"], "env");
    let args: Vec<String> = list(&container["args"], "args")
        .iter()
        .map(|a| text(a, "an argument").to_owned())
        .collect();
    assert_eq!(args[0], "up");
    // $(VAR) comes from the container's env; a label through the downward
    // API must be on the pod.
    let expanded: Vec<String> = args
        .iter()
        .map(|arg| {
            let Some((before, var)) = arg.split_once("$(") else {
                return arg.clone();
            };
            let var = var.strip_suffix(')').expect("$(VAR) at the end");
            let source = named(env, var, "env variable");
            let value = match source["value"].as_str() {
                Some(v) => v.to_owned(),
                None => {
                    let field = text(&source["valueFrom"]["fieldRef"]["fieldPath"], "fieldPath");
                    let label = field
                        .strip_prefix("metadata.labels['")
                        .and_then(|l| l.strip_suffix("']"))
                        .expect("a pod label");
                    text(&labels[label], "the pod label").to_owned()
                }
            };
            format!("{before}{value}")
        })
        .collect();
    assert_the_node_parses("statefulset.yaml", &expanded);
    let up = flags(&expanded);

    // It listens where the container, the service and the bootstrap name say.
    let port = tcp_port(&up["listen"]);
    let mesh_port = named(list(&container["ports"], "ports"), "mesh", "container port");
    assert_eq!(mesh_port["containerPort"].as_i64(), Some(port));
    assert_eq!(svc_port["port"].as_i64(), Some(port));
    assert!(
        svc_port["targetPort"].as_str() == Some("mesh")
            || svc_port["targetPort"].as_i64() == Some(port)
    );
    let bootstrap = &up["bootstrap"];
    let names = [
        format!("{svc}.{namespace}.svc.cluster.local:{port}"),
        format!("{svc}.{namespace}.svc:{port}"),
        format!("{svc}:{port}"),
    ];
    assert!(
        names.contains(bootstrap),
        "--bootstrap {bootstrap} is not the headless service's name, one of {names:?}"
    );

    // The Secret is mounted where --mesh-key points.
    let secret = kind(&docs, "Secret");
    let key_path = Path::new(&up["mesh-key"]);
    let mounts = list(&container["volumeMounts"], "volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| key_path.parent() == Some(Path::new(text(&m["mountPath"], "mountPath"))))
        .unwrap_or_else(|| panic!("nothing is mounted where --mesh-key {key_path:?} is"));
    let volume = named(
        list(&pod["volumes"], "volumes"),
        text(&mount["name"], "a mount's name"),
        "volume",
    );
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        secret["metadata"]["name"].as_str()
    );
    let file = key_path.file_name().unwrap().to_string_lossy().into_owned();
    let key = match volume["secret"]["items"].as_vec() {
        Some(items) => text(
            &items
                .iter()
                .find(|i| i["path"].as_str() == Some(file.as_str()))
                .unwrap_or_else(|| panic!("no item of the secret volume is {file}"))["key"],
            "the item's key",
        ),
        None => file.as_str(),
    };
    assert!(
        !secret["stringData"][key].is_badvalue() || !secret["data"][key].is_badvalue(),
        "the Secret has no {key}"
    );

    // The data directory is a volume of its own.
    let data = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(up["data-dir"].as_str()))
        .expect("--data-dir is a volume mount");
    let data_name = text(&data["name"], "the data mount's name");
    let claims = spec["volumeClaimTemplates"]
        .as_vec()
        .cloned()
        .unwrap_or_default();
    assert!(
        claims
            .iter()
            .any(|c| c["metadata"]["name"].as_str() == Some(data_name))
            || pod["volumes"]
                .as_vec()
                .is_some_and(|v| v.iter().any(|v| v["name"].as_str() == Some(data_name))),
        "the data volume {data_name} is neither a claim template nor a volume"
    );

    // Nothing runs as root, and the readiness probe is a command the node has.
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert!(security["runAsUser"].as_i64() > Some(0));
    // An fsGroup applied at every mount would make the API token (0600)
    // group-readable after a restart, which the node refuses.
    if !security["fsGroup"].is_badvalue() {
        assert_eq!(
            security["fsGroupChangePolicy"].as_str(),
            Some("OnRootMismatch")
        );
    }
    let probe: Vec<String> = list(&container["readinessProbe"]["exec"]["command"], "probe")
        .iter()
        .map(|a| text(a, "the probe's command").to_owned())
        .collect();
    assert_eq!(probe[0], "fusi-node");
    assert_the_node_parses("the readiness probe", &probe[1..]);
    assert!(container["resources"]["requests"].as_hash().is_some());
}

/// A systemd unit's setting: every value of `key`, continuation lines
/// joined.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_systemd_unit_starts_a_node_with_its_limits() {
    let dir = packaging().join("systemd");
    let unit = read(&dir.join("fusi-node.service"));
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    let environment: BTreeMap<String, String> = unit_values(&unit, "Environment")
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let credential = unit_values(&unit, "LoadCredential");
    let credential = credential[0].split_once(':').expect("NAME:PATH").0;
    // What systemd expands: ${VAR} and a lone $VAR from Environment=, %d
    // (the credentials' directory).
    let mut args: Vec<String> = Vec::new();
    for word in exec[0].split_whitespace().skip(1) {
        if let Some(var) = word.strip_prefix('$').filter(|v| !v.starts_with('{')) {
            args.extend(environment[var].split_whitespace().map(str::to_owned));
            continue;
        }
        let mut word = word.replace("%d", "/run/credentials/fusi-node.service");
        for (var, value) in &environment {
            word = word.replace(&format!("${{{var}}}"), value);
        }
        args.push(word);
    }
    assert!(exec[0].starts_with("/usr/local/bin/fusi-node up "));
    assert_the_node_parses("fusi-node.service", &args);
    let up = flags(&args);
    assert_eq!(
        up["mesh-key"],
        format!("/run/credentials/fusi-node.service/{credential}")
    );
    let state = unit_values(&unit, "StateDirectory");
    assert_eq!(up["data-dir"], format!("/var/lib/{}", state[0]));
    // The commented example of a bootstrap name parses too.
    let example = "--bootstrap=fusi-seeds.example.com:7400";
    assert!(unit.contains(&format!("FUSI_BOOTSTRAP={example}")));
    assert_the_node_parses("the unit's example", &["up".into(), example.into()]);
    // A dedicated user, made by sysusers.d.
    let user = &unit_values(&unit, "User")[0];
    assert_ne!(user, "root");
    let sysusers = read(&dir.join("fusi-node.sysusers"));
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with(&format!("u {user} ")))
    );

    // Enough open files and memory maps for the default --max-vus.
    let max_vus = 20_000;
    let files: u64 = unit_values(&unit, "LimitNOFILE")[0]
        .parse()
        .expect("a number");
    assert!(files >= max_vus + 256, "LimitNOFILE={files}");
    let sysctl = read(&dir.join("99-fusi-node.conf"));
    let maps: u64 = sysctl
        .lines()
        .find_map(|l| l.strip_prefix("vm.max_map_count = "))
        .and_then(|v| v.parse().ok())
        .expect("vm.max_map_count in the sysctl drop-in");
    assert!(maps >= fusi_node::limits::maps_needed(max_vus), "{maps}");
    // wasmtime writes machine code at run time.
    assert!(!unit.contains("\nMemoryDenyWriteExecute=yes"));
    verify_with_systemd(&unit);
}

/// Has systemd itself check the unit (settings, specifiers, the binary),
/// with ExecStart pointed at the binary under test, where `systemd-analyze`
/// is installed.
fn verify_with_systemd(unit: &str) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED `systemd-analyze verify` of fusi-node.service: no systemd-analyze here");
        return;
    }
    let dir = super::tempfile_path("unit");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let copy = dir.join("fusi-node.service");
    let bin = node_bin().to_string_lossy().into_owned();
    std::fs::write(&copy, unit.replace("/usr/local/bin/fusi-node", &bin)).expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !said.contains("fusi-node.service"),
        "systemd-analyze verify: {said}"
    );
}

/// The instructions of the Containerfile's last stage, joined across `\`.
fn runtime_stage(containerfile: &str) -> Vec<String> {
    let joined = containerfile.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    lines[last_from..].iter().map(|l| (*l).to_owned()).collect()
}

/// The JSON array of an exec-form instruction, e.g. `CMD ["up", ...]`.
fn exec_form(stage: &[String], instruction: &str) -> Vec<String> {
    let line = stage
        .iter()
        .rfind(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction}"));
    serde_json::from_str(&line[instruction.len()..])
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form: {e}"))
}

#[test]
fn the_containerfile_runs_the_node_as_a_user_and_copies_every_crate() {
    let containerfile = read(&packaging().join("Containerfile"));
    let stage = runtime_stage(&containerfile);
    let user = stage
        .iter()
        .rfind(|l| l.starts_with("USER "))
        .expect("the runtime stage names a USER");
    let user = user["USER ".len()..].split(':').next().unwrap_or_default();
    assert!(
        !["root", "0", ""].contains(&user),
        "the runtime stage runs as {user:?}"
    );
    assert!(stage.iter().any(|l| l == "EXPOSE 7400/tcp"));
    let entry = exec_form(&stage, "ENTRYPOINT");
    assert_eq!(entry, ["/usr/local/bin/fusi-node"]);
    let cmd = exec_form(&stage, "CMD");
    assert_the_node_parses("the image's CMD", &cmd);
    // The build stage copies every member of the workspace: cargo reads
    // them all.
    let manifest = read(&repo().join("Cargo.toml"));
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    let members: Vec<String> = serde_json::from_str(members).expect("a list of members");
    for member in members {
        assert!(
            containerfile.contains(&format!("\nCOPY {member} {member}\n")),
            "the Containerfile does not copy the workspace member {member}"
        );
    }
}

/// Says loudly that the image was not built, and why; under
/// `FUSI_REQUIRE_IMAGE=1` that fails the test instead.
fn skip_image(why: &str) {
    assert!(
        std::env::var_os("FUSI_REQUIRE_IMAGE").is_none(),
        "FUSI_REQUIRE_IMAGE=1 but the image cannot be built here: {why}"
    );
    eprintln!(
        "\n*** SKIPPED building packaging/Containerfile because {why}; it was checked \
         statically only (the_containerfile_runs_the_node_as_a_user_and_copies_every_crate) ***\n"
    );
}

/// Runs `cmd` until it exits or `limit` passes (then kills it); returns
/// whether it succeeded, and its stderr's end.
fn run_for(mut cmd: Command, limit: Duration) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("fusi-e2e-image-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let log = dir.join("stderr");
    let file = std::fs::File::create(&log).expect("a log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start the image builder");
    let start = Instant::now();
    let ok = loop {
        if let Some(status) = child.try_wait().expect("wait for the image builder") {
            break status.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    (ok, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
}

#[test]
fn the_container_image_builds_where_podman_or_buildah_can_get_its_base_images() {
    let Some(builder) = ["podman", "buildah"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        skip_image(
            "neither podman nor buildah is installed (Debian's podman or buildah package builds it)",
        );
        return;
    };
    let containerfile = read(&packaging().join("Containerfile"));
    let bases: Vec<&str> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for base in bases {
        let mut pull = Command::new(builder);
        pull.args(["pull", "--quiet", base]);
        let (ok, err) = run_for(pull, Duration::from_secs(180));
        if !ok {
            skip_image(&format!(
                "{builder} cannot pull the base image {base} from here (no access to its \
                 registry?): {err}"
            ));
            return;
        }
    }
    let tag = format!("localhost/fusi-node-e2e:{}", std::process::id());
    let mut build = Command::new(builder);
    build
        .arg("build")
        .args(["-f", "packaging/Containerfile", "-t", &tag, "."])
        .current_dir(repo());
    let (ok, err) = run_for(build, Duration::from_secs(3600));
    assert!(ok, "{builder} build failed:\n{err}");
    let format = match builder {
        "podman" => "{{.Config.User}}",
        _ => "{{.OCIv1.Config.User}}",
    };
    let user = Command::new(builder)
        .args(["inspect", "--type", "image", "--format", format, &tag])
        .output()
        .expect("inspect the image");
    let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
    let _ = Command::new(builder).args(["rmi", &tag]).output();
    assert_eq!(user, "10001:10001");
}
