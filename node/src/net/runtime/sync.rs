//! Anti-entropy on the event loop: asking peers for the shards of ended runs
//! that this node lacks, and answering their asks. The rules (what to ask,
//! whom, when) are in [`crate::core::sync`]; this is the I/O.
//!
//! Answers read shards from the data dir on a blocking thread and come back
//! to the event loop as [`Inbound::Answer`], so a peer asking for 8 MiB never
//! stalls the loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use serde_bytes::ByteBuf;
use tracing::{debug, info};

use super::{Inbound, Node};
use crate::core::runs::Run;
use crate::core::shard::Shard;
use crate::core::sync::{
    Have, MAX_ANSWER_BYTES, MAX_ANSWER_SHARDS, SYNC_FOR, SyncState, have_of, missing,
};
use crate::core::wire::{Request, Response, validate_run_id};

/// The most answers prepared at once; more asks are refused as busy.
const MAX_ANSWERING: usize = 4;

/// How often a node asks a member (in turn) for the ended runs it does not
/// know: what lets a node that joined after a run report on it.
const RUNS_ASK_EVERY: Duration = Duration::from_secs(15);
/// The first ask, after startup: time for the node to find members.
const FIRST_RUNS_ASK: Duration = Duration::from_secs(3);
/// The most ended runs one answer carries.
const MAX_RUNS_ANSWER: usize = 4;
/// The most bytes of ended runs one answer carries (under the answer bound).
const MAX_RUNS_ANSWER_BYTES: usize = 6 << 20;
/// The most run ids an ask may list (a node keeps 200).
const MAX_KNOWN: usize = 1024;

/// How often the runs are scanned for missing shards.
const SCAN_EVERY: Duration = Duration::from_millis(500);

/// Anti-entropy state of the event loop.
#[derive(Default)]
pub(super) struct Syncs {
    /// Per run: when to ask whom, and since when it has been asking.
    states: HashMap<String, (SyncState, Duration)>,
    /// Requests in flight: run.
    pending: HashMap<OutboundRequestId, String>,
    /// Answers being prepared on blocking threads.
    answering: Arc<AtomicUsize>,
    /// Asks for ended runs in flight.
    asking_runs: HashMap<OutboundRequestId, PeerId>,
    /// When to ask a member for the ended runs this node does not know.
    next_runs_ask: Duration,
    /// Whose turn it is to be asked.
    runs_turn: usize,
    next_scan: Duration,
}

impl Node {
    /// Asks a peer for missing shards, for each ended run that lacks some.
    pub(super) fn sync_tick(&mut self) {
        let now = self.now();
        self.ask_for_runs(now);
        if now < self.sync.next_scan {
            return;
        }
        self.sync.next_scan = now + SCAN_EVERY;
        let me = self.core.me().id.clone();
        let ended: Vec<(String, Vec<String>)> = self
            .runs_core()
            .all()
            .into_iter()
            .filter(|r| r.is_finished())
            .map(|r| {
                let candidates = r.proposal.candidates.iter().map(|c| c.id.clone());
                (r.id.clone(), candidates.collect())
            })
            .collect();
        self.sync
            .states
            .retain(|id, _| ended.iter().any(|(e, _)| e == id));
        let mut asks = Vec::new();
        for (id, candidates) in ended {
            if self.holds_all(&id) {
                self.sync.states.remove(&id);
                continue;
            }
            let mut peers: Vec<String> = candidates
                .into_iter()
                .filter(|c| *c != me && self.core.member(c).is_some_and(|m| !m.suspect))
                .collect();
            peers.sort();
            let (state, since) = self
                .sync
                .states
                .entry(id.clone())
                .or_insert_with(|| (SyncState::default(), now));
            if now.saturating_sub(*since) > SYNC_FOR || !state.due(now) {
                continue;
            }
            if let Some(peer) = state.pick(&peers, now) {
                asks.push((id, peer.clone()));
            }
        }
        for (run, peer) in asks {
            let Ok(peer_id) = peer.parse::<PeerId>() else {
                continue;
            };
            let have = self.runs_held(&run).map(have_of).unwrap_or_default();
            let id = self.swarm.behaviour_mut().rpc.send_request(
                &peer_id,
                Request::Shards {
                    run: run.clone(),
                    have,
                },
            );
            debug!(run = %run, %peer, "asking for missing shards");
            self.sync.pending.insert(id, run);
        }
    }

    /// Asks one member, in turn, for the ended runs this node does not know.
    fn ask_for_runs(&mut self, now: Duration) {
        if self.sync.next_runs_ask == Duration::ZERO {
            self.sync.next_runs_ask = FIRST_RUNS_ASK;
        }
        if now < self.sync.next_runs_ask || !self.sync.asking_runs.is_empty() {
            return;
        }
        let mut members: Vec<String> = self
            .core
            .peers(now)
            .into_iter()
            .filter(|p| !p.member.suspect && p.connected)
            .map(|p| p.member.heartbeat.id.clone())
            .collect();
        members.sort();
        if members.is_empty() {
            return;
        }
        self.sync.next_runs_ask = now + RUNS_ASK_EVERY;
        let peer = &members[self.sync.runs_turn % members.len()];
        self.sync.runs_turn = self.sync.runs_turn.wrapping_add(1);
        let Ok(peer_id) = peer.parse::<PeerId>() else {
            return;
        };
        let core = self.runs_core();
        let known: Vec<String> = core
            .all()
            .into_iter()
            .map(|r| &r.id)
            .chain(core.declined())
            .take(MAX_KNOWN)
            .cloned()
            .collect();
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request(&peer_id, Request::Runs { known });
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
        let response = if !self.core.may_answer_clock(&peer.to_string()) {
            Response::Refused {
                reason: "not a member yet".into(),
            }
        } else if known.len() > MAX_KNOWN {
            Response::Refused {
                reason: format!("more than {MAX_KNOWN} run ids"),
            }
        } else {
            let known: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
            let mut unknown: Vec<&Run> = self
                .runs_core()
                .all()
                .into_iter()
                .filter(|r| r.is_finished() && r.plan.is_some())
                .filter(|r| !known.contains(r.id.as_str()))
                .collect();
            unknown.sort_by_key(|r| std::cmp::Reverse(r.seen_wall_ns));
            // Newest first, within a byte budget under the answer bound
            // (one run at least).
            let mut runs = Vec::new();
            let mut bytes = 0;
            let me = self.peer_id.to_string();
            for ended in unknown
                .into_iter()
                .take(MAX_RUNS_ANSWER)
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
        if taken == MAX_RUNS_ANSWER {
            // There may be more: ask again soon.
            self.sync.next_runs_ask = at.now;
        }
        true
    }

    /// Whether a failed request was an ask for ended runs.
    pub(super) fn on_runs_failure(&mut self, request_id: OutboundRequestId) -> bool {
        self.sync.asking_runs.remove(&request_id).is_some()
    }

    /// Whether this node holds every shard each node of the run's plan
    /// announced.
    fn holds_all(&self, id: &str) -> bool {
        let Some(run) = self.runs_core().get(id) else {
            return true;
        };
        if self.runs_held(id).is_none() {
            return run.plan.is_none();
        }
        run.plan.iter().flat_map(|p| &p.shares).all(|share| {
            let (received, announced) = self.runs_shards_of(id, &share.node).unwrap_or((0, None));
            announced == Some(received)
        })
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
                    let shard = match Shard::decode(bytes) {
                        // Signed by the node that measured it, whoever
                        // relays it.
                        Ok(s) if s.run_id == run => {
                            match crate::net::sign::verify_shard(bytes, &s.node) {
                                Ok(()) => s,
                                Err(e) => {
                                    self.warn_once(format!("sync-sig:{peer}"), || {
                                    format!("refused a shard of {} that {peer} sent for run {run}: {e}", s.node)
                                });
                                    continue;
                                }
                            }
                        }
                        Ok(s) => {
                            self.warn_once(format!("sync-run:{peer}"), || {
                                format!(
                                    "{peer} answered an ask for run {run} with a shard of run {}",
                                    s.run_id
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
                    match self.shard_problem(&shard) {
                        Ok(()) => new += usize::from(self.keep_shard(&shard, bytes)),
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
            Response::Clock { .. } | Response::Module { .. } | Response::Runs { .. } => (0, false),
        };
        if new > 0 {
            info!(run = %run, %peer, "filled {new} missing shards");
        }
        if let Some((state, _)) = self.sync.states.get_mut(&run) {
            state.answered(new, more, now);
        }
        true
    }

    /// Whether a failed request was one of this node's asks.
    pub(super) fn on_sync_failure(&mut self, request_id: OutboundRequestId) -> bool {
        let Some(run) = self.sync.pending.remove(&request_id) else {
            return false;
        };
        let now = self.now();
        if let Some((state, _)) = self.sync.states.get_mut(&run) {
            state.failed(now);
        }
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
        let refuse = |reason: &str| Response::Refused {
            reason: reason.to_owned(),
        };
        let refusal = if !self.core.may_answer_clock(&peer.to_string()) {
            Some(refuse("not a member yet"))
        } else if validate_run_id(run).is_err() {
            Some(refuse("not a run id"))
        } else if self.sync.answering.load(Ordering::Relaxed) >= MAX_ANSWERING {
            Some(refuse("busy answering other asks; ask again later"))
        } else {
            None
        };
        if let Some(response) = refusal {
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
        let answering = self.sync.answering.clone();
        answering.fetch_add(1, Ordering::Relaxed);
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
            answering.fetch_sub(1, Ordering::Relaxed);
            let _ = answers.send(Inbound::Answer {
                channel,
                response: Response::Shards { shards, more },
            });
        });
    }
}
