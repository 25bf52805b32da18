//! Anti-entropy on the event loop: asking peers for the shards of ended runs
//! that this node lacks, and answering their asks. The rules (what to ask,
//! whom, when, how many answers at once) are in [`crate::core::node`] and
//! [`crate::core::sync`]; this is the I/O.
//!
//! Answers read shards from the data dir on a blocking thread and come back
//! to the event loop as [`Inbound::Answer`], so a peer asking for 8 MiB never
//! stalls the loop.

use std::collections::HashMap;

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use serde_bytes::ByteBuf;
use tracing::{debug, info};

use super::{Inbound, Node};
use crate::core::node::MAX_RUNS_ANSWER;
use crate::core::shard::SparseShard;
use crate::core::sync::{Have, MAX_ANSWER_BYTES, MAX_ANSWER_SHARDS, have_of, missing};
use crate::core::wire::{Request, Response};

/// The most bytes of ended runs one answer carries (under the answer bound).
const MAX_RUNS_ANSWER_BYTES: usize = 6 << 20;

/// The asks in flight, by request: what the core is told when they are
/// answered or fail.
#[derive(Default)]
pub(super) struct Syncs {
    /// Asks for missing shards: the run.
    pending: HashMap<OutboundRequestId, String>,
    /// Asks for ended runs: the peer asked.
    asking_runs: HashMap<OutboundRequestId, PeerId>,
}

impl Node {
    /// Asks `peer` for the shards of the ended `run` this node lacks, as the
    /// core decided, telling it what this node holds.
    pub(super) fn ask_shards(&mut self, run: String, peer: &str) {
        let Ok(peer_id) = peer.parse::<PeerId>() else {
            self.core.shards_ask_failed(&run, self.now());
            return;
        };
        let have = self.runs_held(&run).map(have_of).unwrap_or_default();
        let id = self.ask(
            peer_id,
            Request::Shards {
                run: run.clone(),
                have,
            },
        );
        debug!(run = %run, %peer, "asking for missing shards");
        self.sync.pending.insert(id, run);
    }

    /// Asks `peer` for the ended runs this node does not know, as the core
    /// decided.
    pub(super) fn ask_runs(&mut self, peer: &str, known: Vec<String>) {
        let Ok(peer_id) = peer.parse::<PeerId>() else {
            self.core.runs_ask_failed();
            return;
        };
        let id = self.ask(peer_id, Request::Runs { known });
        self.sync.asking_runs.insert(id, peer_id);
    }

    /// Answers a member's ask for the ended runs it does not know: the
    /// newest few.
    pub(super) fn answer_runs_known(
        &mut self,
        peer: PeerId,
        known: &[String],
        channel: ResponseChannel<Response>,
    ) {
        let response = match self.core.runs_unknown_to(&peer.to_string(), known) {
            Err(reason) => Response::Refused { reason },
            Ok(unknown) => {
                // Newest first, within a byte budget under the answer bound
                // (one run at least).
                let mut runs = Vec::new();
                let mut bytes = 0;
                let me = self.peer_id.to_string();
                for ended in unknown
                    .into_iter()
                    .filter_map(|r| {
                        let led = r.finish.as_ref().and_then(|f| r.leader_at(f.term)) == Some(&me);
                        r.ended().map(|e| (e, led))
                    })
                    .map(|(mut ended, led)| {
                        // A finish this node declared itself goes out signed
                        // now (it signs its run messages as they leave).
                        if led && ended.finish_sig.is_none() {
                            let mut env = crate::core::wire::RunEnvelope {
                                protocol: crate::core::wire::RUN_PROTOCOL,
                                run: ended.id.clone(),
                                body: crate::core::wire::RunMessage::Finish(ended.finish.clone()),
                                sig: None,
                            };
                            if self.signer.sign_run(&mut env).is_ok() {
                                ended.finish_sig = env.sig;
                            }
                        }
                        ended
                    })
                {
                    let size = crate::core::wire::encode(&ended).len();
                    if !runs.is_empty() && bytes + size > MAX_RUNS_ANSWER_BYTES {
                        break;
                    }
                    bytes += size;
                    runs.push(ended);
                }
                Response::Runs { runs }
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// Whether a response answers an ask for ended runs; if so, the runs
    /// are taken (checked as their messages would be).
    pub(super) fn on_runs_response(
        &mut self,
        request_id: OutboundRequestId,
        response: &Response,
    ) -> bool {
        let Some(peer) = self.sync.asking_runs.remove(&request_id) else {
            return false;
        };
        let Response::Runs { runs } = response else {
            self.core.runs_ask_failed();
            return true;
        };
        let at = self.at();
        let mut taken = 0;
        for ended in runs.iter().take(MAX_RUNS_ANSWER) {
            match self.adopt_run(ended.clone(), at) {
                Ok(true) => {
                    taken += 1;
                    info!(run = %ended.id, %peer, "learned of an ended run");
                }
                Ok(false) => {}
                Err(e) => self.warn_once(format!("adopt:{peer}"), || {
                    format!("refused run {} from {peer}: {e}", ended.id)
                }),
            }
        }
        self.core.runs_answered(taken, at.now);
        true
    }

    /// Whether a failed request was an ask for ended runs.
    pub(super) fn on_runs_failure(&mut self, request_id: OutboundRequestId) -> bool {
        let ours = self.sync.asking_runs.remove(&request_id).is_some();
        if ours {
            self.core.runs_ask_failed();
        }
        ours
    }

    /// Whether a response answers one of this node's asks; if so, it is handled.
    pub(super) fn on_sync_response(
        &mut self,
        request_id: OutboundRequestId,
        peer: PeerId,
        response: &Response,
    ) -> bool {
        let Some(run) = self.sync.pending.remove(&request_id) else {
            return false;
        };
        let now = self.now();
        let (new, more) = match response {
            Response::Shards { shards, more } => {
                let mut new = 0;
                for bytes in shards {
                    let shard = match SparseShard::decode(bytes) {
                        // Signed by the node that measured it, whoever
                        // relays it.
                        Ok(s) if s.head.run_id == run => {
                            match crate::net::sign::verify_shard(bytes, &s.head.node) {
                                Ok(()) => s,
                                Err(e) => {
                                    self.warn_once(format!("sync-sig:{peer}"), || {
                                    format!("refused a shard of {} that {peer} sent for run {run}: {e}", s.head.node)
                                });
                                    continue;
                                }
                            }
                        }
                        Ok(s) => {
                            self.warn_once(format!("sync-run:{peer}"), || {
                                format!(
                                    "{peer} answered an ask for run {run} with a shard of run {}",
                                    s.head.run_id
                                )
                            });
                            continue;
                        }
                        Err(e) => {
                            self.warn_once(format!("sync-shard:{peer}"), || {
                                format!("refused a shard {peer} sent for run {run}: {e}")
                            });
                            continue;
                        }
                    };
                    match self.shard_problem(&shard.head) {
                        Ok(()) => new += usize::from(self.keep_shard(shard, bytes)),
                        Err(p) => self.warn_once(format!("sync-shard:{peer}"), || {
                            format!("refused a shard {peer} sent for run {run}: {p}")
                        }),
                    }
                }
                (new, *more)
            }
            Response::Refused { reason } => {
                debug!(run = %run, %peer, "shard ask refused: {reason}");
                (0, false)
            }
            Response::Clock { .. }
            | Response::Kept
            | Response::Heard { .. }
            | Response::Module { .. }
            | Response::Runs { .. }
            | Response::Run { .. }
            | Response::Members { .. } => (0, false),
        };
        if new > 0 {
            info!(run = %run, %peer, "filled {new} missing shards");
        }
        self.core.shards_answered(&run, new, more, now);
        true
    }

    /// Whether a failed request was one of this node's asks.
    pub(super) fn on_sync_failure(&mut self, request_id: OutboundRequestId) -> bool {
        let Some(run) = self.sync.pending.remove(&request_id) else {
            return false;
        };
        self.core.shards_ask_failed(&run, self.now());
        true
    }

    /// Answers a member's ask for shards it lacks: the shards are read on a
    /// blocking thread and the answer comes back as [`Inbound::Answer`].
    pub(super) fn answer_shards(
        &mut self,
        peer: PeerId,
        run: &str,
        have: Vec<Have>,
        channel: ResponseChannel<Response>,
    ) {
        if let Err(reason) = self.core.begin_shards_answer(&peer.to_string(), run) {
            let response = Response::Refused {
                reason: reason.to_owned(),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
            return;
        }
        // What the peer lacks is worked out off the event loop too: a long
        // run holds many shards, and the peer's list may be long.
        let held = self.runs_held(run).cloned().unwrap_or_default();
        let store = self.runs_store();
        let run = run.to_owned();
        let answers = self.delayed.clone();
        tokio::task::spawn_blocking(move || {
            let mut keys = missing(&held, &have, MAX_ANSWER_SHARDS + 1);
            let mut more = keys.len() > MAX_ANSWER_SHARDS;
            keys.truncate(MAX_ANSWER_SHARDS);
            let mut shards = Vec::new();
            let mut bytes = 0;
            for (node, seq) in keys {
                let Some(shard) = store.shard_bytes(&run, &node, seq) else {
                    continue;
                };
                if bytes + shard.len() > MAX_ANSWER_BYTES && !shards.is_empty() {
                    more = true;
                    break;
                }
                bytes += shard.len();
                shards.push(ByteBuf::from(shard));
            }
            let _ = answers.send(Inbound::Answer {
                channel,
                response: Response::Shards { shards, more },
            });
        });
    }
}
