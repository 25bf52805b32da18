//! The libp2p stack of a node: transport, behaviours and their settings.
//!
//! - Transport: TCP, then the mesh key (pnet) when there is one, then Noise
//!   (authenticates the peer id) and Yamux (streams). QUIC is left out: a
//!   private network only covers TCP, and a QUIC listener would be a way in
//!   that the mesh key does not close.
//! - gossipsub: heartbeats, suspicions and run messages. Every
//!   message is signed by its author (`Strict`), so the author's peer id is
//!   known and a heartbeat cannot speak for another node. Messages are
//!   validated by the node before gossipsub forwards them: what does not
//!   decode, or claims another author, is rejected at the first hop. The size limit is
//!   [`MAX_GOSSIP_BYTES`] on every node, since gossipsub drops larger
//!   messages silently at the receiver. The first heartbeat comes after 100 ms
//!   rather than the default 5 s, so the mesh forms quickly.
//! - request-response: [`WireCodec`] on [`RPC_PROTOCOL`], for what must get
//!   an answer (the clock exchange).
//! - identify and ping: what peers run, and that connections are alive.
//! - mDNS, only when asked: it multicasts on every interface.
//!
//! Every byte on the TCP connections is counted into a [`Traffic`], so a
//! node can tell what the mesh costs it.
//!
//! Connections stay open while idle (an hour): gossipsub's streams keep a
//! connection open whatever libp2p's idle timeout, so the event loop closes
//! those the node does not keep itself ([`MeshCore::closes`]).
//!
//! [`MeshCore::closes`]: crate::core::mesh::MeshCore::closes

use std::sync::Arc;
use std::time::Duration;

use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, Transport, gossipsub, identify, identity, mdns, noise,
    ping, request_response, tcp, yamux,
};

use crate::core::wire::{MAX_GOSSIP_BYTES, RPC_PROTOCOL};
use crate::net::codec::WireCodec;
use crate::net::traffic::{Counted, Traffic};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The behaviours of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Broadcasts.
    pub gossipsub: gossipsub::Behaviour,
    /// Questions with answers.
    pub rpc: request_response::Behaviour<WireCodec>,
    /// What a peer runs and where it listens.
    pub identify: identify::Behaviour,
    /// Liveness of connections.
    pub ping: ping::Behaviour,
    /// LAN discovery, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Builds the swarm of a node with `key` as its identity.
pub fn build_swarm(
    key: identity::Keypair,
    psk: Option<PreSharedKey>,
    use_mdns: bool,
    traffic: Arc<Traffic>,
) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| -> Result<_, BoxError> {
            let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(move |socket, _| Counted::new(socket, traffic));
            let private = tcp.and_then(move |socket, _| async move {
                match psk {
                    Some(psk) => PnetConfig::new(psk)
                        .handshake(socket)
                        .await
                        .map(futures::future::Either::Left),
                    None => Ok(futures::future::Either::Right(socket)),
                }
            });
            Ok(private
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .timeout(Duration::from_secs(20)))
        })?
        .with_behaviour(|key| -> Result<Behaviour, BoxError> {
            let config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .heartbeat_initial_delay(Duration::from_millis(100))
                .max_transmit_size(MAX_GOSSIP_BYTES)
                // gossipsub's default mesh (6, from 5 to 12) and flood
                // publish: with a mesh of 4 and no flood publish, the
                // simulator (`fusi-node simulate`, 100 nodes, 1 % of
                // messages dropped) saw nodes that missed an arm start up to
                // half a second late, and 40 nodes' membership not converge.
                .validation_mode(gossipsub::ValidationMode::Strict)
                // A message is forwarded only once this node has decoded and
                // accepted it, so a peer's garbage stops at its first hop.
                .validate_messages()
                .build()
                .map_err(|e| format!("gossipsub configuration: {e}"))?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                config,
            )
            .map_err(|e| format!("gossipsub: {e}"))?;
            let rpc = request_response::Behaviour::with_codec(
                WireCodec,
                [(
                    StreamProtocol::new(RPC_PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            );
            let identify = identify::Behaviour::new(
                identify::Config::new("/fusi/1.0.0".into(), key.public())
                    .with_agent_version(format!("fusi-node/{}", env!("CARGO_PKG_VERSION"))),
            );
            let mdns = if use_mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    key.public().to_peer_id(),
                )?)
            } else {
                None
            };
            Ok(Behaviour {
                gossipsub,
                rpc,
                identify,
                ping: ping::Behaviour::default(),
                mdns: mdns.into(),
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}
