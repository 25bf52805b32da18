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
use crate::core::shard::Shard;
use crate::core::sync::{
    Have, MAX_ANSWER_BYTES, MAX_ANSWER_SHARDS, SYNC_FOR, SyncState, have_of, missing,
};
use crate::core::wire::{Request, Response, validate_run_id};

/// The most answers prepared at once; more asks are refused as busy.
const MAX_ANSWERING: usize = 4;

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
    next_scan: Duration,
}

impl Node {
    /// Asks a peer for missing shards, for each ended run that lacks some.
    pub(super) fn sync_tick(&mut self) {
        let now = self.now();
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
            let have = self
                .runs_report(&run)
                .map(|r| have_of(r.held()))
                .unwrap_or_default();
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

    /// Whether this node holds every shard each node of the run's plan
    /// announced.
    fn holds_all(&self, id: &str) -> bool {
        let Some(run) = self.runs_core().get(id) else {
            return true;
        };
        let Some(report) = self.runs_report(id) else {
            return run.plan.is_none();
        };
        run.plan.iter().flat_map(|p| &p.shares).all(|share| {
            let (received, announced) = report.shards_of(&share.node);
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
                        Ok(s) if s.run_id == run => s,
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
            Response::Clock { .. } | Response::Module { .. } => (0, false),
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
        let held = self
            .runs_report(run)
            .map(|r| r.held().clone())
            .unwrap_or_default();
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
