//! The mesh, end to end: real `fusi-node up` processes on loopback, started
//! by fusi-testnet's [`Mesh`], checked through their local APIs.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fusi_testnet::{ExtraNode, KeyChoice, Mesh, MeshConfig, get_json};
use serde_json::Value;

use super::serial;

fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fusi-node"))
}

fn peers(api: SocketAddr, token: &str) -> Vec<Value> {
    match get_json(api, token, "/v1/peers") {
        Ok(v) => v["peers"].as_array().cloned().unwrap_or_default(),
        Err(e) => panic!("GET /v1/peers on {api}: {e:#}"),
    }
}

fn listed(api: SocketAddr, token: &str) -> Vec<String> {
    peers(api, token)
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `ok` every 100 ms until it holds or `timeout` passes; returns when.
fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if ok() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stderr_of(mesh: &Mesh, index: usize) -> String {
    mesh.stderr_tail(index).join("\n")
}

#[test]
fn five_nodes_find_each_other_keep_strangers_out_and_notice_loss_and_return() {
    let _serial = serial();
    let config = MeshConfig::new(node_bin(), &[("fra", 2), ("nrt", 2), ("ewr", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    let nodes = mesh.nodes().to_vec();
    let all_listed = |nodes: &[fusi_testnet::MeshNode]| {
        nodes.iter().all(|n| {
            let seen = listed(n.api, &token);
            nodes
                .iter()
                .all(|m| m.index == n.index || seen.contains(&m.peer_id))
        })
    };

    // All five list each other within 5 s of the last start.
    let took = wait_for(Duration::from_secs(5), || all_listed(&nodes));
    assert!(
        took.is_some(),
        "not converged within 5 s: {:#?}",
        nodes
            .iter()
            .map(|n| (n.name.clone(), listed(n.api, &token)))
            .collect::<Vec<_>>()
    );
    eprintln!("5 nodes converged {took:?} after the last start");

    // The CLI's views of a node: `status` and `peers`, human and JSON.
    let api = nodes[0].api.to_string();
    let status = super::fusi_to(&token, &["status", "--api", &api]);
    let text = status.stdout();
    assert!(status.output.status.success(), "{}", status.stderr());
    assert!(
        text.contains(&nodes[0].peer_id) && text.contains("private (key fingerprint"),
        "{text}"
    );
    let table = super::fusi_to(&token, &["peers", "--api", &api]).stdout();
    assert_eq!(table.lines().count(), 5, "a header and 4 peers:\n{table}");
    assert!(
        table.contains("nrt-2") && table.contains("CLOCK OFFSET"),
        "{table}"
    );
    let json = super::fusi_to(&token, &["peers", "--json", "--api", &api]).stdout();
    let parsed: Value = serde_json::from_str(&json).expect("peers --json is JSON");
    assert_eq!(parsed["peers"].as_array().map(Vec::len), Some(4));

    // Nodes with another key, or none, never appear; the one with a fresh key
    // also tries an unreachable bootstrap address, retried and logged.
    let stranger = mesh
        .start_node(ExtraNode {
            key: KeyChoice::Fresh,
            extra_args: vec!["--bootstrap".into(), "/ip4/127.0.0.1/tcp/9".into()],
            ..ExtraNode::new("fra")
        })
        .expect("the stranger starts");
    let open = mesh
        .start_node(ExtraNode {
            key: KeyChoice::Open,
            ..ExtraNode::new("nrt")
        })
        .expect("the open node starts");
    // Garbage bytes at a node's p2p port.
    let p2p_port: u16 = nodes[0]
        .p2p
        .split('/')
        .nth(4)
        .and_then(|p| p.parse().ok())
        .expect("a tcp port in the p2p address");
    let mut garbage = TcpStream::connect((nodes[0].ip, p2p_port)).expect("connect to p2p");
    let _ = garbage.write_all(&[0xde; 4096]);
    drop(garbage);
    std::thread::sleep(Duration::from_secs(4));
    let outsiders = [
        mesh.nodes()[stranger].peer_id.clone(),
        mesh.nodes()[open].peer_id.clone(),
    ];
    for n in &nodes {
        let seen = listed(n.api, &token);
        assert!(
            outsiders.iter().all(|o| !seen.contains(o)),
            "{} lists an outsider: {seen:?}",
            n.name
        );
        assert_eq!(seen.len(), 4, "{} lists {seen:?}", n.name);
    }
    assert!(listed(mesh.nodes()[stranger].api, &token).is_empty());
    assert!(listed(mesh.nodes()[open].api, &token).is_empty());
    let stranger_log = stderr_of(&mesh, stranger);
    assert!(
        stranger_log.contains("cannot reach the bootstrap node /ip4/127.0.0.1/tcp/9")
            && stranger_log.contains("retrying in"),
        "{stranger_log}"
    );
    let first_log = stderr_of(&mesh, 0);
    assert!(
        first_log.contains("refused a connection from"),
        "{first_log}"
    );
    assert!(mesh.poll_exits().is_empty(), "a node died");

    // On loopback every clock is the same, so 0 lies within each estimate's
    // bound once it has its first 8 samples, and those bounds are a few ms at
    // most (a loaded 2-core machine delays an answer by a millisecond or so).
    let sampled = wait_for(Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            peers(n.api, &token)
                .iter()
                .all(|p| p["clock_samples"].as_u64() >= Some(8))
        })
    });
    assert!(
        sampled.is_some(),
        "clock estimates without 8 samples after 20 s"
    );
    for n in &nodes {
        for p in peers(n.api, &token) {
            let offset = p["offset_ms"].as_f64().expect("an offset");
            let bound = p["bound_ms"].as_f64().expect("a bound");
            assert!(
                bound < 5.0,
                "{} sees {}: offset {offset} ± {bound} ms",
                n.name,
                p["name"]
            );
            assert!(
                offset.abs() <= bound + 1e-6,
                "{} sees {}: 0 is outside {offset} ± {bound} ms",
                n.name,
                p["name"]
            );
        }
    }

    // A killed node is reported gone within 10 s.
    let victim = 4;
    let victim_id = nodes[victim].peer_id.clone();
    mesh.kill(victim).expect("kill");
    let gone = wait_for(Duration::from_secs(12), || {
        nodes[..victim]
            .iter()
            .all(|n| !listed(n.api, &token).contains(&victim_id))
    });
    eprintln!("the killed node was reported gone after {gone:?}");
    assert!(
        gone.is_some_and(|t| t <= Duration::from_secs(10)),
        "gone after {gone:?}"
    );

    // Restarted, it comes back with the same peer id.
    mesh.restart(victim).expect("restart");
    assert_eq!(mesh.nodes()[victim].peer_id, victim_id);
    let back = wait_for(Duration::from_secs(10), || {
        nodes[..victim]
            .iter()
            .all(|n| listed(n.api, &token).contains(&victim_id))
    });
    assert!(back.is_some(), "the restarted node did not come back");

    // A node stopped cleanly (SIGTERM) says so, and is gone at once.
    let leaver = 3;
    let leaver_id = nodes[leaver].peer_id.clone();
    let status = mesh.stop(leaver).expect("stop");
    assert!(status.success(), "a clean stop exits 0: {status:?}");
    let gone = wait_for(Duration::from_secs(3), || {
        nodes[..leaver]
            .iter()
            .all(|n| !listed(n.api, &token).contains(&leaver_id))
    });
    eprintln!("the stopped node was dropped after {gone:?}");
    assert!(gone.is_some(), "a stopped node was still listed after 3 s");
    assert!(stderr_of(&mesh, 0).contains("member left (shut down)"));
}

#[test]
fn emulated_latency_bounds_clock_estimates_as_ntp_predicts() {
    let _serial = serial();
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 1), ("ewr", 1)]);
    // fra and nrt: 60 ms each way. fra and ewr: 90 ms out, 30 ms back.
    config.latency = Some("fra-nrt=60ms,fra>ewr=90ms,ewr>fra=30ms".into());
    let mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    let [fra, nrt, ewr] = [0, 1, 2].map(|i| mesh.nodes()[i].clone());
    let view = |from: &fusi_testnet::MeshNode, of: &fusi_testnet::MeshNode| {
        peers(from.api, &token)
            .into_iter()
            .find(|p| p["id"] == of.peer_id.as_str())
    };
    let ready = wait_for(Duration::from_secs(30), || {
        [(&fra, &nrt), (&fra, &ewr), (&ewr, &fra), (&nrt, &ewr)]
            .iter()
            .all(|(a, b)| view(a, b).is_some_and(|p| p["clock_samples"].as_u64() >= Some(8)))
    });
    assert!(ready.is_some(), "no clock estimates after 30 s");
    let estimate = |a, b| {
        let p = view(a, b).expect("listed");
        let (o, bound) = (
            p["offset_ms"].as_f64().expect("offset"),
            p["bound_ms"].as_f64().expect("bound"),
        );
        // On one machine the true offset is zero: it must lie inside.
        assert!(o.abs() <= bound + 1e-6, "0 outside {o} ± {bound} ms");
        (o, bound)
    };
    // Symmetric 60 ms: θ near 0, bound at least half the 120 ms round trip.
    let (o, bound) = estimate(&fra, &nrt);
    assert!(o.abs() < 5.0 && bound >= 60.0, "fra→nrt {o} ± {bound} ms");
    // Asymmetric 90/30 ms: θ = (90 − 30) / 2 = +30 ms from fra, −30 ms from
    // ewr, and the bound (≥ 60 ms) still holds the true offset.
    let (o, bound) = estimate(&fra, &ewr);
    assert!(
        (o - 30.0).abs() < 5.0 && bound >= 60.0,
        "fra→ewr {o} ± {bound} ms"
    );
    let (o, bound) = estimate(&ewr, &fra);
    assert!(
        (o + 30.0).abs() < 5.0 && bound >= 60.0,
        "ewr→fra {o} ± {bound} ms"
    );
    // No delay configured between nrt and ewr.
    let (o, bound) = estimate(&nrt, &ewr);
    assert!(o.abs() < 5.0 && bound < 10.0, "nrt→ewr {o} ± {bound} ms");
}

/// A peer that has the mesh key but sends garbage, oversized, forged and
/// future-protocol heartbeats: every one is dropped and logged once with the
/// peer id, none makes it a member or changes another member, and the node
/// stays up.
#[test]
fn a_rogue_peer_with_the_key_can_neither_crash_nor_fool_a_node() {
    use fusi_node::core::membership::{Heartbeat, PROTOCOL};
    use fusi_node::core::wire::{self, MEMBERS_TOPIC};
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, gossipsub};

    let _serial = serial();
    let mut mesh = Mesh::start(MeshConfig::new(node_bin(), &[("fra", 2)])).expect("testnet");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("converged");
    let nodes = mesh.nodes().to_vec();
    let key = fusi_node::net::meshkey::read(mesh.key_file()).expect("mesh key");
    let rogue_key = libp2p::identity::Keypair::generate_ed25519();
    let rogue = rogue_key.public().to_peer_id().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut swarm =
            fusi_node::net::behaviour::build_swarm(rogue_key, Some(key), false, Default::default())
                .expect("rogue swarm");
        let topic = gossipsub::IdentTopic::new(MEMBERS_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .expect("subscribe");
        let target: Multiaddr = nodes[0].p2p.parse().expect("p2p address");
        swarm.dial(target).expect("dial");
        // Wait until the node has subscribed us, so publishing reaches it.
        let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::Behaviour(
                    fusi_node::net::behaviour::BehaviourEvent::Gossipsub(
                        gossipsub::Event::Subscribed { .. },
                    ),
                ) = swarm.select_next_some().await
                {
                    break;
                }
            }
        })
        .await;
        assert!(subscribed.is_ok(), "the node never subscribed the rogue");
        let heartbeat = |id: &str, protocol: u32, name: &str| Heartbeat {
            protocol,
            id: id.to_owned(),
            name: name.to_owned(),
            region: "fra".into(),
            boot: u64::MAX / 2,
            seq: 1,
            cores: 1,
            vu_limit: 1,
            version: "rogue".into(),
            cpu: 0.0,
            sockets: 0,
            listen: vec![],
            leaving: false,
            clock_epoch: 0,
            busy: false,
        };
        let mut oversized = heartbeat(&rogue, PROTOCOL, "big");
        oversized.version = "v".repeat(20_000);
        let messages = [
            vec![0xff; 64],
            vec![0xff; 64],
            wire::encode(&oversized),
            wire::encode(&heartbeat(&nodes[1].peer_id, PROTOCOL, "forged")),
            wire::encode(&heartbeat(&rogue, 99, "future")),
            wire::encode(&heartbeat(&rogue, 99, "future")),
        ];
        for bytes in messages {
            let published = swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes);
            assert!(published.is_ok(), "publish: {published:?}");
            // Drive the swarm a little between messages.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    swarm.select_next_some().await;
                }
            })
            .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                swarm.select_next_some().await;
            }
        })
        .await;
    });
    drop(runtime);

    assert!(mesh.poll_exits().is_empty(), "a node died");
    let seen = peers(nodes[0].api, &token);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["id"], nodes[1].peer_id.as_str());
    assert_eq!(
        seen[0]["name"],
        nodes[1].name.as_str(),
        "the forgery changed nothing"
    );
    let log = stderr_of(&mesh, 0);
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count(&format!("dropped a heartbeat from {rogue}")),
        2,
        "{log}"
    );
    assert_eq!(
        count(&format!(
            "refused a heartbeat from {rogue} (via {rogue}): heartbeat signed by {rogue} claims"
        )),
        1,
        "{log}"
    );
    assert_eq!(count("protocol version 99"), 1, "{log}");
    assert!(log.contains("over the 16384-byte limit"), "{log}");
    // Validated before forwarding: garbage, oversized and forged heartbeats
    // stop at the first hop. (A future protocol's heartbeat is forwarded, for
    // the newer nodes that understand it.)
    let second = stderr_of(&mesh, 1);
    assert!(
        !second.contains("dropped a heartbeat") && !second.contains("signed by"),
        "node 1 got what node 0 rejected:\n{second}"
    );
}

#[test]
fn up_and_keygen_refuse_bad_flags_with_the_fix() {
    use super::{fails_with, tempfile_path, write_temp};
    let _serial = serial();
    let dir = tempfile_path("up-data");
    let dir = dir.to_str().expect("utf-8 temp path");
    let local = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"];
    let with = |extra: &[&'static str]| {
        let mut args = vec!["up", "--data-dir", dir];
        args.extend_from_slice(&local);
        args.extend_from_slice(extra);
        args
    };
    fails_with(&with(&[]), 1, "fusi-node keygen mesh.key");
    fails_with(
        &[
            "up",
            "--data-dir",
            dir,
            "--insecure-open",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "10.1.2.3:7401",
        ],
        1,
        "not a loopback address",
    );
    fails_with(
        &with(&[
            "--insecure-open",
            "--bootstrap",
            "/dns4/under_score.example/tcp/7400",
        ]),
        2,
        "is not a host name",
    );
    fails_with(
        &with(&["--insecure-open", "--region", "Frankfurt"]),
        2,
        "a-z, 0-9",
    );
    fails_with(
        &with(&["--insecure-open", "--emulate-latency", "fra-fra=10ms"]),
        2,
        "pairs a region with itself",
    );
    fails_with(
        &with(&["--insecure-open", "--listen", "/ip4/127.0.0.1/udp/0"]),
        2,
        "listens on TCP",
    );
    let garbage = write_temp("garbage.key", b"not a key");
    let garbage = garbage.to_str().expect("utf-8 temp path");
    fails_with(
        &["up", "--data-dir", dir, "--mesh-key", garbage],
        1,
        "is not a mesh key",
    );
    fails_with(&["keygen", garbage], 1, "never overwritten");
    fails_with(
        &["peers", "--api", "127.0.0.1:9"],
        1,
        "cannot reach a fusi-node API",
    );
}

/// Sends `request` (raw HTTP/1.1) to `api` and returns the status code.
fn raw_status(api: SocketAddr, request: &str) -> u16 {
    use std::io::Read;
    let mut stream = TcpStream::connect(api).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn the_api_refuses_web_pages_and_requests_without_the_token_and_the_cli_checks_the_node() {
    let _serial = serial();
    let mesh = Mesh::start(MeshConfig::new(node_bin(), &[("fra", 1)])).expect("the testnet starts");
    let node = mesh.nodes()[0].clone();
    let token = mesh.api_token().to_owned();
    let host = node.api;
    let routes = [
        ("GET", "/v1/hello?nonce=00112233445566778899aabbccddeeff"),
        ("GET", "/v1/status"),
        ("GET", "/v1/peers"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/r1"),
        ("POST", "/v1/runs/r1/stop"),
        ("GET", "/v1/runs/r1/report"),
        ("GET", "/v1/runs/r1/live"),
        ("POST", "/v1/anything"),
    ];
    for (method, path) in routes {
        // What a page's fetch(..., {mode: "no-cors"}) sends: an Origin, no token.
        let page = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\n\
             Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert_eq!(raw_status(node.api, &page), 403, "{method} {path}");
        // Even with the token, an Origin is refused.
        let with_token = page.replace(
            "Origin:",
            &format!("Authorization: Bearer {token}\r\nOrigin:"),
        );
        assert_eq!(raw_status(node.api, &with_token), 403, "{method} {path}");
        if path.starts_with("/v1/hello") {
            continue;
        }
        let no_token = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/cbor\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert_eq!(raw_status(node.api, &no_token), 401, "{method} {path}");
    }
    let api = node.api.to_string();
    let data_dir = node.data_dir.to_string_lossy().into_owned();
    // The CLI finds the token in the node's data directory...
    let status = super::fusi(&["status", "--api", &api, "--data-dir", &data_dir]);
    assert!(status.output.status.success(), "{}", status.stderr());
    // ...and refuses a node that does not prove it knows the token it holds.
    let other = "ab".repeat(32);
    let refused = super::fusi_to(&other, &["status", "--api", &api]);
    assert_eq!(refused.output.status.code(), Some(1));
    assert!(
        refused.stderr().contains(&format!(
            "something else listens on {api}: it is not the fusi-node"
        )),
        "{}",
        refused.stderr()
    );
    // Without a token anywhere, the error names both places.
    let empty = super::tempfile_path("no-data-dir");
    let empty = empty.to_string_lossy().into_owned();
    let none = super::fusi(&["runs", "--api", &api, "--data-dir", &empty]);
    assert_eq!(none.output.status.code(), Some(1));
    assert!(
        none.stderr().contains("FUSI_API_TOKEN") && none.stderr().contains("api.token"),
        "{}",
        none.stderr()
    );
}

#[test]
fn a_node_bootstraps_by_host_name_before_the_name_answers_and_joins() {
    let _serial = serial();
    let dir = super::tempfile_path("bootstrap-by-name");
    let _ = std::fs::remove_dir_all(&dir);
    // A port nothing listens on yet, for node A to take later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let by_name = format!("localhost:{port}");
    // B starts first, as pods of a StatefulSet do in parallel: its name
    // resolves, but nobody answers there yet.
    let mut config_b = MeshConfig::new(node_bin(), &[("nrt", 1)]);
    config_b.dir = Some(dir.clone());
    config_b.extra_args = vec!["--bootstrap".into(), by_name.clone()];
    let mesh_b = Mesh::start(config_b).expect("node B starts");
    let b = mesh_b.nodes()[0].clone();
    let refused = wait_for(Duration::from_secs(20), || {
        stderr_of(&mesh_b, 0).contains(&format!("(an address of {by_name})"))
    });
    assert!(
        refused.is_some(),
        "B does not say it cannot reach localhost's address:\n{}",
        stderr_of(&mesh_b, 0)
    );
    // A comes up on 127.0.0.1 (what localhost resolves to, besides maybe
    // ::1, which then refuses) with the same key.
    let mut config_a = MeshConfig::new(node_bin(), &[("fra", 1)]);
    config_a.dir = Some(dir.clone());
    config_a.extra_args = vec!["--listen".into(), format!("/ip4/127.0.0.1/tcp/{port}")];
    let mesh_a = Mesh::start(config_a).expect("node A starts");
    let a = mesh_a.nodes()[0].clone();
    let joined = wait_for(Duration::from_secs(45), || {
        listed(a.api, &a.api_token).contains(&b.peer_id)
            && listed(b.api, &b.api_token).contains(&a.peer_id)
    });
    let log_b = stderr_of(&mesh_b, 0);
    assert!(joined.is_some(), "B did not join A by name:\n{log_b}");
    eprintln!("B joined A by name {joined:?} after A started");
    assert!(
        log_b.contains(&format!("the bootstrap name {by_name} resolves to [")),
        "{log_b}"
    );
    if log_b.contains("::1") {
        // localhost has an IPv6 address too, where A does not listen: B
        // said so, and joined through the IPv4 one all the same.
        assert!(log_b.contains(&format!("/ip6/::1/tcp/{port}")), "{log_b}");
    }
    let mut meshes = [mesh_a, mesh_b];
    for mesh in &mut meshes {
        assert!(mesh.poll_exits().is_empty(), "a node died");
    }
    drop(meshes);
    let _ = std::fs::remove_dir_all(&dir);
}
