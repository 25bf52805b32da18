//! Tests of the mesh's pieces: startup-line parsing, the API client, and
//! (on Unix) process management against a shell script standing in for
//! `fusi-node`.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;

use crate::NETNS_PREFIX;

use super::*;

#[test]
fn startup_lines_are_recognised() -> anyhow::Result<()> {
    let p2p = "/ip4/127.0.1.1/tcp/40123/p2p/12D3KooWAbc";
    assert_eq!(
        parse_startup_line(&format!("p2p listening on {p2p}\n"))?,
        Some(StartupLine::P2p(p2p.to_owned()))
    );
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, 45677));
    assert_eq!(
        parse_startup_line("api listening on http://127.0.0.1:45677")?,
        Some(StartupLine::Api(api))
    );
    assert_eq!(
        parse_startup_line("  api listening on http://127.0.0.1:45677/ \r")?,
        Some(StartupLine::Api(api))
    );
    assert_eq!(parse_startup_line("")?, None);
    assert_eq!(parse_startup_line("fusi-node 0.1.0 starting")?, None);
    assert_eq!(parse_startup_line("target listening on http://x")?, None);

    let err = |line: &str| match parse_startup_line(line) {
        Ok(parsed) => panic!("`{line}` should be rejected, got {parsed:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err("p2p listening on /ip4/127.0.1.1/tcp/40123").contains("/p2p/<peer id>"));
    assert!(err("p2p listening on /ip4/127.0.1.1/tcp/1/p2p/").contains("/p2p/<peer id>"));
    assert!(err("p2p listening on 12D3KooW").contains("/p2p/<peer id>"));
    assert!(err("api listening on 127.0.0.1:45677").contains("http://IP:PORT"));
    assert!(err("api listening on http://localhost:45677").contains("http://IP:PORT"));
    Ok(())
}

#[test]
fn peer_ids_come_from_multiaddrs_and_peer_lists() -> anyhow::Result<()> {
    assert_eq!(
        peer_id_of("/ip4/127.0.1.1/tcp/1/p2p/12D3KooWAbc"),
        Some("12D3KooWAbc")
    );
    assert_eq!(peer_id_of("/ip4/127.0.1.1/tcp/1"), None);
    assert_eq!(peer_id_of("/p2p/a/tcp/1"), None);

    let peers = serde_json::json!({"peers": [
        {"id": "A", "name": "fra-1", "region": "fra", "rtt_ms": 1.5},
        {"id": "B", "name": "nrt-1", "region": "nrt"},
    ]});
    assert_eq!(peer_ids(&peers)?, ["A", "B"]);
    assert_eq!(
        peer_ids(&serde_json::json!({"peers": []}))?,
        Vec::<String>::new()
    );
    assert!(peer_ids(&serde_json::json!([])).is_err());
    assert!(peer_ids(&serde_json::json!({"peers": [{"name": "x"}]})).is_err());
    Ok(())
}

#[test]
fn the_stderr_tail_keeps_the_last_lines() {
    let tail = Tail::default();
    for i in 0..STDERR_TAIL_LINES + 5 {
        tail.push(format!("line {i}"));
    }
    let lines = tail.lines();
    assert_eq!(lines.len(), STDERR_TAIL_LINES);
    assert_eq!(lines[0], "line 5");
    assert_eq!(
        lines.last().map(String::as_str),
        Some(format!("line {}", STDERR_TAIL_LINES + 4).as_str())
    );
    let started = Instant::now();
    tail.close();
    tail.wait_closed(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(1));

    assert_eq!(format_tail(&[]), " (it wrote nothing to stderr)");
    assert_eq!(
        format_tail(&["a".into(), "b".into()]),
        "; its stderr ended with:\n    a\n    b"
    );
}

#[test]
fn colour_codes_are_stripped() {
    let line = "\u{1b}[2m2026-11-27T05:48:01Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mfusi_node\u{1b}[0m\u{1b}[2m:\u{1b}[0m cannot reach";
    assert_eq!(
        strip_ansi(line),
        "2026-11-27T05:48:01Z  WARN fusi_node: cannot reach"
    );
    assert_eq!(strip_ansi("plain [text] ümlaut"), "plain [text] ümlaut");
    assert_eq!(strip_ansi("a\u{1b}[1;31mb\u{1b}7c\u{1b}"), "abc");
}

#[test]
fn responses_are_parsed_and_dechunked() -> anyhow::Result<()> {
    let (status, body) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing")?;
    assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));
    let (status, body) = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope")?;
    assert_eq!((status, body.as_slice()), (404, &b"nope"[..]));
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                    3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let (_, body) = parse_response(chunked)?;
    assert_eq!(body, br#"{"a":1}"#);

    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"[..],
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab",
    ] {
        assert!(
            parse_response(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    Ok(())
}

/// A one-shot HTTP server: answers each of `responses` to one connection,
/// in order, and returns the requests it read.
fn serve(responses: Vec<Vec<u8>>) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("local address");
    let server = thread::spawn(move || {
        let mut requests = Vec::new();
        for response in responses {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).expect("read the request");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            requests.push(String::from_utf8_lossy(&request).into_owned());
            // Written in two parts, to exercise reading until the close.
            let (head, tail) = response.split_at(response.len() / 2);
            stream.write_all(head).expect("write");
            stream.flush().expect("flush");
            thread::sleep(Duration::from_millis(10));
            stream.write_all(tail).expect("write");
        }
        requests
    });
    (addr, server)
}

fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n{body}").into_bytes()
}

/// A token for [`get_json`].
const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn get_json_reads_json_and_reports_errors() {
    let status = r#"{"id":"12D3KooWAbc","name":"fra-1","region":"fra"}"#;
    let (addr, server) = serve(vec![
        http(
            "200 OK",
            &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                status.len()
            ),
            status,
        ),
        http(
            "200 OK",
            "Transfer-Encoding: chunked\r\n",
            "b\r\n{\"peers\":[]\r\n1\r\n}\r\n0\r\n\r\n",
        ),
        http("404 Not Found", "", r#"{"error":"no route for /v1/nope"}"#),
        http("200 OK", "", "not json"),
    ]);

    let value = get_json(addr, TOKEN, "/v1/status").expect("a JSON answer");
    assert_eq!(value["name"], "fra-1");
    let value = get_json(addr, TOKEN, "/v1/peers").expect("a chunked JSON answer");
    assert_eq!(value, serde_json::json!({"peers": []}));

    let msg = format!("{:#}", get_json(addr, TOKEN, "/v1/nope").expect_err("404"));
    assert!(msg.contains(&format!("GET http://{addr}/v1/nope")), "{msg}");
    assert!(
        msg.contains("status 404") && msg.contains("no route"),
        "{msg}"
    );
    let msg = format!(
        "{:#}",
        get_json(addr, TOKEN, "/v1/text").expect_err("not JSON")
    );
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("not JSON"),
        "{msg}"
    );

    let requests = server.join().expect("server thread");
    assert!(
        requests[0].starts_with("GET /v1/status HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains(&format!("Host: {addr}\r\n")));
    assert!(requests[0].contains("Connection: close\r\n"));
    assert!(requests[0].contains(&format!("Authorization: Bearer {TOKEN}\r\n")));
    assert!(get_json(addr, "tok\r\nX: y", "/v1/status").is_err());

    let msg = format!(
        "{:#}",
        get_json(addr, TOKEN, "v1/status").expect_err("relative path")
    );
    assert!(msg.contains("/v1/status"), "{msg}");
    assert!(get_json(addr, TOKEN, "/a b").is_err());
    assert!(get_json(addr, TOKEN, "/a\r\nX: y").is_err());

    // Nothing listens there any more.
    let msg = format!(
        "{:#}",
        get_json(addr, TOKEN, "/v1/status").expect_err("refused")
    );
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("connecting"),
        "{msg}"
    );
}

#[test]
fn get_json_times_out_on_a_silent_server() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("local address");
    let started = Instant::now();
    let msg = format!(
        "{:#}",
        get_json(addr, TOKEN, "/v1/status").expect_err("timeout")
    );
    assert!(started.elapsed() >= HTTP_TIMEOUT, "{:?}", started.elapsed());
    assert!(
        started.elapsed() < HTTP_TIMEOUT * 3,
        "{:?}",
        started.elapsed()
    );
    assert!(msg.contains(&addr.to_string()), "{msg}");
    drop(listener);
}

#[test]
fn configs_are_checked() {
    let exe = std::env::current_exe().expect("the test binary");
    let ok = MeshConfig::new(&exe, &[("fra", 2), ("nrt", 1)]);
    assert_eq!(ok.startup_timeout, STARTUP_TIMEOUT);
    assert!(ok.validate().is_ok());
    let err = |config: MeshConfig| match config.validate() {
        Ok(()) => panic!("{config:?} should be rejected"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err(MeshConfig::new(&exe, &[])).contains("at least one region"));
    assert!(err(MeshConfig::new(&exe, &[("fra", 1), ("fra", 1)])).contains("twice"));
    assert!(err(MeshConfig::new(&exe, &[("fra", 0)])).contains("0 nodes"));
    assert!(err(MeshConfig::new(&exe, &[("fra", 255)])).contains("1 to 254"));
    assert!(err(MeshConfig::new(&exe, &[("FRA", 1)])).contains("a-z, 0-9"));
    assert!(err(MeshConfig::new(&exe, &[("", 1)])).contains("a-z, 0-9"));
    let long = "a".repeat(MAX_REGION_LEN + 1);
    assert!(err(MeshConfig::new(&exe, &[(long.as_str(), 1)])).contains("1 to 32"));
    let many: Vec<String> = (0..=MAX_REGIONS).map(|i| format!("r{i}")).collect();
    let many: Vec<(&str, usize)> = many.iter().map(|r| (r.as_str(), 1)).collect();
    assert!(err(MeshConfig::new(&exe, &many)).contains("too many"));
    let missing = MeshConfig::new("/nonexistent/fusi-node", &[("fra", 1)]);
    assert!(err(missing).contains("cargo build -p fusi-node"));

    assert!(validate_region("us-east-1").is_ok());
    assert!(validate_region(&"a".repeat(MAX_REGION_LEN)).is_ok());
    assert_eq!(region_range(1).to_string(), "127.0.1.0/24");
    assert_eq!(region_range(255).to_string(), "127.0.255.0/24");
}

/// Process management against a stand-in for `fusi-node`.
#[cfg(unix)]
mod fake_node {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    use std::sync::OnceLock;

    use super::*;

    /// A shell script with `fusi-node`'s command line: `keygen FILE`
    /// writes a key; `up` appends its arguments to DATA_DIR/args, prints
    /// the startup lines (peer id `12D3KooW<name>`, API port 9) and runs
    /// until SIGTERM (exit 0). Flags only it knows: `--fake-fail` (exit 3
    /// after `boom` on stderr), `--fake-silent` (print nothing),
    /// `--fake-exit-after` (exit 7 after 200 ms).
    const SCRIPT: &str = r#"#!/bin/sh
cmd=$1
shift
case "$cmd" in
keygen) echo "key $$" > "$1"; exit 0 ;;
up) ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
all="$*"
listen=; name=; data=; mode=
while [ $# -gt 0 ]; do
    case "$1" in
    --listen) listen=$2; shift ;;
    --name) name=$2; shift ;;
    --data-dir) data=$2; shift ;;
    --fake-*) mode=$1 ;;
    esac
    shift
done
echo "$all" >> "$data/args"
echo "$name starting" >&2
if [ "$mode" = --fake-fail ]; then echo boom >&2; exit 3; fi
trap 'echo "$name stopping" >&2; exit 0' TERM
if [ "$mode" != --fake-silent ]; then
    echo "fake fusi-node"
    echo "p2p listening on ${listen%/tcp/0}/tcp/4001/p2p/12D3KooW$name"
    echo "api listening on http://127.0.0.1:9"
fi
if [ "$mode" = --fake-exit-after ]; then sleep 0.2; exit 7; fi
while :; do sleep 0.1; done
"#;

    /// The script, written once per process (before any test forks, so
    /// that no child inherits it open for writing: that would make exec
    /// fail with "text file busy").
    fn script() -> &'static Path {
        static SCRIPT_PATH: OnceLock<PathBuf> = OnceLock::new();
        SCRIPT_PATH.get_or_init(|| {
            use std::os::unix::fs::PermissionsExt as _;
            let mut hasher = DefaultHasher::new();
            SCRIPT.hash(&mut hasher);
            let path = std::env::temp_dir().join(format!(
                "fusi-testnet-fake-node-{:016x}.sh",
                hasher.finish()
            ));
            if std::fs::read_to_string(&path).ok().as_deref() != Some(SCRIPT) {
                let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
                std::fs::write(&tmp, SCRIPT).expect("write the fake node");
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                    .expect("make the fake node executable");
                std::fs::rename(&tmp, &path).expect("move the fake node into place");
            }
            path
        })
    }

    fn args_of(node: &MeshNode) -> Vec<String> {
        std::fs::read_to_string(node.data_dir.join("args"))
            .expect("the fake node's args")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[cfg(target_os = "linux")]
    fn running(pid: u32) -> bool {
        Path::new("/proc").join(pid.to_string()).exists()
    }

    #[cfg(not(target_os = "linux"))]
    fn running(_pid: u32) -> bool {
        false
    }

    #[test]
    fn nodes_start_stop_restart_and_are_cleaned_up() -> anyhow::Result<()> {
        let mut config = MeshConfig::new(script(), &[("fra", 2), ("nrt", 1)]);
        config.latency = Some("fra-nrt=120ms".into());
        config.extra_args = vec!["--extra".into()];
        let mut mesh = Mesh::start(config)?;
        let dir = mesh.dir().to_owned();
        assert!(dir.starts_with(std::env::temp_dir()));
        assert_eq!(mesh.key_file(), dir.join("mesh.key"));
        assert!(mesh.key_file().is_file());

        let names: Vec<(&str, &str, String)> = mesh
            .nodes()
            .iter()
            .map(|n| (n.name.as_str(), n.region.as_str(), n.ip.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("fra-1", "fra", "127.0.1.1".to_owned()),
                ("fra-2", "fra", "127.0.1.2".to_owned()),
                ("nrt-1", "nrt", "127.0.2.1".to_owned()),
            ]
        );
        let first = mesh.nodes()[0].clone();
        assert_eq!(first.p2p, "/ip4/127.0.1.1/tcp/4001/p2p/12D3KooWfra-1");
        assert_eq!(first.peer_id, "12D3KooWfra-1");
        assert_eq!(first.api, SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
        assert_eq!(first.data_dir, dir.join("fra-1"));
        assert_eq!(first.key_file.as_deref(), Some(mesh.key_file()));
        assert!(mesh.nodes().iter().all(|n| n.alive && running(n.pid)));
        assert_eq!(
            mesh.region_range("nrt").map(|r| r.to_string()).as_deref(),
            Some("127.0.2.0/24")
        );
        assert_eq!(mesh.region_range("syd"), None);

        // One API token for the mesh, in every node's data directory, private.
        let token = mesh.api_token().to_owned();
        assert_eq!(token.len(), 64);
        for node in mesh.nodes() {
            assert_eq!(node.api_token, token, "{}", node.name);
            let file = node.data_dir.join(API_TOKEN_FILE);
            assert_eq!(std::fs::read_to_string(&file)?.trim(), token);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", file.display());
            }
        }

        let key = mesh.key_file().display().to_string();
        let data = first.data_dir.display().to_string();
        assert_eq!(
            args_of(&first),
            [format!(
                "--listen /ip4/127.0.1.1/tcp/0 --api 127.0.0.1:0 --region fra --name fra-1 \
                 --data-dir {data} --mesh-key {key} --emulate-latency fra-nrt=120ms \
                 --source-ip 127.0.1.1 --extra"
            )]
        );
        for node in &mesh.nodes()[1..] {
            let args = args_of(node);
            assert!(
                args[0].contains(&format!("--bootstrap {}", first.p2p)),
                "{args:?}"
            );
            assert!(
                args[0].contains(&format!("--source-ip {}", node.ip)),
                "{args:?}"
            );
        }

        // A crash, then a restart that bootstraps from another live node.
        mesh.kill(0)?;
        assert!(!mesh.nodes()[0].alive && !running(first.pid));
        assert!(format!("{:#}", mesh.kill(0).expect_err("dead")).contains("not running"));
        assert!(format!("{:#}", mesh.restart(1).expect_err("alive")).contains("still running"));
        mesh.restart(0)?;
        let restarted = &mesh.nodes()[0];
        assert!(restarted.alive && restarted.pid != first.pid);
        let args = args_of(restarted);
        assert_eq!(args.len(), 2);
        assert!(
            args[1].contains(&format!("--bootstrap {}", mesh.nodes()[1].p2p)),
            "{args:?}"
        );
        assert!(args[1].contains("--name fra-1 --data-dir"), "{args:?}");

        // A clean stop; the stderr tail has its last words.
        let status = mesh.stop(1)?;
        assert!(status.success(), "{status}");
        assert!(!mesh.nodes()[1].alive);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !mesh.stderr_tail(1).contains(&"fra-2 stopping".to_owned()) {
            assert!(Instant::now() < deadline, "{:?}", mesh.stderr_tail(1));
            thread::sleep(POLL);
        }
        assert_eq!(mesh.stderr_tail(99), Vec::<String>::new());
        assert!(mesh.kill(99).is_err());

        // Extra nodes: a new region with a key of its own, an open node.
        let syd = mesh.start_node(ExtraNode {
            key: KeyChoice::Fresh,
            ..ExtraNode::new("syd")
        })?;
        let node = mesh.nodes()[syd].clone();
        assert_eq!((syd, node.name.as_str()), (3, "syd-1"));
        assert_eq!(node.ip, Ipv4Addr::new(127, 0, 3, 1));
        let own_key = dir.join("syd-1.key");
        assert_eq!(node.key_file.as_deref(), Some(own_key.as_path()));
        assert_ne!(std::fs::read(&own_key)?, std::fs::read(mesh.key_file())?);
        assert!(args_of(&node)[0].contains(&format!("--bootstrap {}", mesh.nodes()[0].p2p)));
        assert_eq!(
            mesh.region_range("syd").map(|r| r.to_string()).as_deref(),
            Some("127.0.3.0/24")
        );

        let open = mesh.start_node(ExtraNode {
            key: KeyChoice::Open,
            bootstrap: Some(2),
            ..ExtraNode::new("fra")
        })?;
        let node = mesh.nodes()[open].clone();
        assert_eq!(
            (node.name.as_str(), node.ip),
            ("fra-3", Ipv4Addr::new(127, 0, 1, 3))
        );
        assert_eq!(node.key_file, None);
        let args = &args_of(&node)[0];
        assert!(
            args.contains("--insecure-open") && !args.contains("--mesh-key"),
            "{args}"
        );
        assert!(
            args.contains(&format!("--bootstrap {}", mesh.nodes()[2].p2p)),
            "{args}"
        );
        let err = mesh
            .start_node(ExtraNode {
                bootstrap: Some(1),
                ..ExtraNode::new("fra")
            })
            .expect_err("fra-2 is stopped");
        assert!(format!("{err:#}").contains("not running"));
        assert!(mesh.start_node(ExtraNode::new("Bad")).is_err());

        // A node that fails to start is not added.
        let err = mesh
            .start_node(ExtraNode {
                extra_args: vec!["--fake-fail".into()],
                ..ExtraNode::new("ams")
            })
            .expect_err("the node fails");
        let msg = format!("{err:#}");
        assert!(msg.contains("node ams-1 did not start: it exited"), "{msg}");
        assert!(msg.contains("\n    boom"), "{msg}");
        assert_eq!(mesh.nodes().len(), 5);
        assert_eq!(mesh.region_range("ams"), None);

        // A node that dies on its own is noticed.
        let doomed = mesh.start_node(ExtraNode {
            extra_args: vec!["--fake-exit-after".into()],
            ..ExtraNode::new("nrt")
        })?;
        assert_eq!(mesh.nodes()[doomed].name, "nrt-2");
        let deadline = Instant::now() + Duration::from_secs(5);
        let exits = loop {
            let exits = mesh.poll_exits();
            if !exits.is_empty() {
                break exits;
            }
            assert!(Instant::now() < deadline, "nrt-2 did not exit");
            thread::sleep(POLL);
        };
        assert_eq!(exits.len(), 1);
        assert_eq!((exits[0].0, exits[0].1.code()), (doomed, Some(7)));
        assert!(!mesh.nodes()[doomed].alive);

        let pids: Vec<u32> = mesh.nodes().iter().map(|n| n.pid).collect();
        let started = Instant::now();
        drop(mesh);
        assert!(started.elapsed() < STOP_GRACE, "{:?}", started.elapsed());
        assert!(!dir.exists(), "{} was left behind", dir.display());
        for pid in pids {
            assert!(!running(pid), "process {pid} is still running");
        }
        Ok(())
    }

    #[test]
    fn a_node_that_fails_fails_the_start_with_its_stderr() {
        let mut config = MeshConfig::new(script(), &[("fra", 1)]);
        config.extra_args = vec!["--fake-fail".into()];
        let msg = format!("{:#}", Mesh::start(config).expect_err("the node fails"));
        assert!(msg.contains("node fra-1 did not start: it exited"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("\n    fra-1 starting\n    boom"), "{msg}");

        let mut config = MeshConfig::new(script(), &[("fra", 1)]);
        config.extra_args = vec!["--fake-silent".into()];
        config.startup_timeout = Duration::from_millis(300);
        let msg = format!("{:#}", Mesh::start(config).expect_err("the node is silent"));
        assert!(
            msg.contains("node fra-1 did not start: it printed no `api listening on` line"),
            "{msg}"
        );
    }

    #[test]
    fn a_given_directory_is_kept_and_its_key_reused() -> anyhow::Result<()> {
        let dir = make_temp_dir()?;
        let mut config = MeshConfig::new(script(), &[("fra", 1)]);
        config.dir = Some(dir.join("mesh"));
        let mesh = Mesh::start(config.clone())?;
        let key = std::fs::read(mesh.key_file())?;
        let data_dir = mesh.nodes()[0].data_dir.clone();
        drop(mesh);
        assert!(data_dir.join("args").is_file());

        let mesh = Mesh::start(config)?;
        assert_eq!(std::fs::read(mesh.key_file())?, key);
        assert_eq!(args_of(&mesh.nodes()[0]).len(), 2);
        drop(mesh);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// Runs `f` on a thread inside the network namespace `name`.
    #[cfg(target_os = "linux")]
    fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(Path::new("/run/netns").join(name))
            .unwrap_or_else(|e| panic!("opening the namespace {name}: {e}"));
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    crate::netns::enter(&file).expect("entering the namespace");
                    f()
                })
                .join()
                .expect("the thread in the namespace panicked")
        })
    }

    /// `GET /hello` from inside namespace `name` to `addr`: the status line,
    /// or the error.
    #[cfg(target_os = "linux")]
    fn hello_from(name: &str, addr: SocketAddr) -> Result<String, String> {
        in_netns(name, || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|e| e.to_string())?;
            Ok(answer.lines().next().unwrap_or_default().to_owned())
        })
    }

    /// The names of the namespaces `ip netns` lists.
    #[cfg(target_os = "linux")]
    fn namespaces() -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A mesh in network namespaces: each node in its own, on `10.200.R.i`,
    /// its API reached through a proxy on loopback, a target in the hub
    /// that every node reaches until its link is cut, and every namespace
    /// gone once the mesh is dropped. Without root or `ip`, says so loudly
    /// and checks only that a mesh on loopback cannot cut a link
    /// (`FUSI_REQUIRE_NETNS=1` makes that a failure).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mesh_in_network_namespaces_reaches_its_target_and_apis_and_cleans_up() -> anyhow::Result<()>
    {
        let mut loopback = Mesh::start(MeshConfig::new(script(), &[("fra", 1)]))?;
        let msg = format!("{:#}", loopback.cut_off(0).expect_err("on loopback"));
        assert!(msg.contains("MeshConfig::netns"), "{msg}");
        assert!(!loopback.in_netns() && loopback.nodes()[0].netns.is_none());
        drop(loopback);
        if let Err(e) = crate::netns_available() {
            assert!(
                std::env::var_os("FUSI_REQUIRE_NETNS").is_none(),
                "network namespaces unavailable: {e:#}"
            );
            eprintln!("NOTE: network namespaces unavailable ({e:#}): not tested");
            return Ok(());
        }
        let mut config = MeshConfig::new(script(), &[("fra", 2), ("nrt", 1)]);
        config.netns = true;
        let mut mesh = Mesh::start(config)?;
        assert!(mesh.in_netns());
        let nodes = mesh.nodes().to_vec();
        let ips: Vec<String> = nodes.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(ips, ["10.200.1.1", "10.200.1.2", "10.200.2.1"]);
        assert_eq!(
            mesh.region_range("nrt").map(|r| r.to_string()).as_deref(),
            Some("10.200.2.0/24")
        );
        let own = std::fs::read_link("/proc/self/ns/net")?;
        let mut seen = vec![own];
        for node in &nodes {
            let args = &args_of(node)[0];
            assert!(
                args.contains(&format!("--listen /ip4/{}/tcp/0", node.ip))
                    && args.contains(&format!("--source-ip {}", node.ip)),
                "{args}"
            );
            let name = node.netns.clone().expect("a namespace");
            assert!(
                name.starts_with(&format!("{NETNS_PREFIX}{}-", std::process::id())),
                "{name}"
            );
            assert!(namespaces().contains(&name), "{name}");
            // Its own namespace: not this process's, nor another node's.
            let ns = std::fs::read_link(format!("/proc/{}/ns/net", node.pid))?;
            assert!(!seen.contains(&ns), "{}: {}", node.name, ns.display());
            seen.push(ns);
            // The proxy on this side, not the node's port 9 over there.
            assert!(node.api.ip().is_loopback() && node.api.port() != 9);
        }

        // The API proxy reaches the node's loopback, in its namespace.
        let fra2 = nodes[1].netns.clone().expect("a namespace");
        let api = in_netns(&fra2, || {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let addr = listener.local_addr().expect("address");
            let server = thread::spawn(move || {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"name\": \"fra-2\"}",
                )
                .expect("answer");
            });
            (addr, server)
        });
        mesh.slots[1]
            .net
            .as_ref()
            .expect("a namespace")
            .set_api(api.0);
        let status = get_json(nodes[1].api, mesh.api_token(), "/v1/status")?;
        assert_eq!(status["name"], "fra-2");
        api.1.join().expect("the fake API");

        // The target lives in the hub; every node reaches it, until cut off.
        let target = mesh.spawn_target(crate::TargetConfig::default())?;
        assert_eq!(target.addr().ip(), crate::HUB_IP);
        for node in &nodes {
            let name = node.netns.as_deref().expect("a namespace");
            assert_eq!(
                hello_from(name, target.addr()).as_deref(),
                Ok("HTTP/1.1 200 OK")
            );
        }
        assert_eq!(target.stats().requests, 3);
        let nrt = nodes[2].netns.clone().expect("a namespace");
        mesh.cut_off(2)?;
        assert!(hello_from(&nrt, target.addr()).is_err());
        mesh.reconnect(2)?;
        assert_eq!(
            hello_from(&nrt, target.addr()).as_deref(),
            Ok("HTTP/1.1 200 OK")
        );
        assert_eq!(target.stats().requests, 4);

        // A restart stays in the namespace, behind the same proxy.
        mesh.kill(0)?;
        mesh.restart(0)?;
        let restarted = &mesh.nodes()[0];
        assert_eq!(restarted.api, nodes[0].api);
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/ns/net", restarted.pid))?,
            seen[1]
        );

        // fusit-PID-N-R-I: the mesh's namespaces all start fusit-PID-N-.
        let mesh_id = fra2.rsplitn(3, '-').last().unwrap_or_default().to_owned();
        drop(mesh);
        drop(target);
        let left: Vec<String> = namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{mesh_id}-")))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        Ok(())
    }

    #[test]
    fn keygen_failures_are_reported() {
        let msg = format!(
            "{:#}",
            keygen(script(), Path::new("/nonexistent/dir/mesh.key")).expect_err("no such dir")
        );
        assert!(msg.contains("keygen /nonexistent/dir/mesh.key"), "{msg}");
    }
}
