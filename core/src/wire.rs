//! The mesh's messages between nodes, defined once, and their CBOR encoding.
//!
//! Two kinds of traffic cross the mesh:
//!
//! - **gossip** (libp2p gossipsub), best effort, to every node: on
//!   [`MEMBERS_TOPIC`], a node's [`Heartbeat`] when it starts or changes;
//!   on [`SUSPECTS_TOPIC`], a [`Suspicion`] when a watch finds a member
//!   silent;
//! - **request-response** ([`RPC_PROTOCOL`]), one answer per question, to one
//!   peer: a [`Request`] and its [`Response`].
//!
//! Every payload is CBOR (ciborium) and is decoded here and only here, with a
//! size bound checked before a byte is parsed and field bounds checked after.
//! Bytes from a peer are untrusted: each decoder returns a [`WireError`] that
//! names what was wrong, never panics, and never allocates more than its bound.
//! Unknown fields are ignored, so a newer node may add fields without breaking
//! older ones; a changed meaning gets a new protocol number instead (see
//! docs/wire-protocol.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::assign::{Candidate, RegionWeight};
use crate::membership::{Heartbeat, Pulse};
use crate::segment::ExecutionSegment;
use crate::spec::RunSpec;

/// The gossipsub topic of heartbeats.
pub const MEMBERS_TOPIC: &str = "fusi/1/members";

/// The gossipsub topic of suspicions ([`Suspicion`]).
pub const SUSPECTS_TOPIC: &str = "fusi/1/suspects";

/// The gossipsub topic of run lifecycle messages ([`RunMessage`]).
pub const RUNS_TOPIC: &str = "fusi/1/runs";

/// The gossipsub topic of metric shards ([`crate::shard::Shard`]).
pub const SHARDS_TOPIC: &str = "fusi/1/shards";

/// The request-response protocol name.
pub const RPC_PROTOCOL: &str = "/fusi/rpc/1";

/// The largest gossip message any node sends or accepts (gossipsub's
/// `max_transmit_size`). It must be the same on every node: gossipsub drops
/// larger messages silently at the receiver.
pub const MAX_GOSSIP_BYTES: usize = 1 << 20;

/// The largest heartbeat accepted.
pub const MAX_HEARTBEAT_BYTES: usize = 16 << 10;

/// The largest request or response accepted over [`RPC_PROTOCOL`], but
/// for a module answer.
pub const MAX_RPC_BYTES: usize = 64 << 10;

/// The largest request accepted: an ask for shards lists what the asker
/// holds, which for a run of thousands of nodes is more than 64 KiB.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The largest shard a worker sends its leader ([`Request::Shard`]): the
/// request bound less room for the envelope.
pub const MAX_SENT_SHARD_BYTES: usize = MAX_REQUEST_BYTES - 1024;

/// The largest shards answer accepted: the answer bound and the envelope.
pub const MAX_SHARDS_RESPONSE_BYTES: usize = crate::sync::MAX_ANSWER_BYTES + (64 << 10);

/// The largest module answer accepted: the module bound and the envelope.
pub const MAX_MODULE_RESPONSE_BYTES: usize = super::module_name::MAX_MODULE_BYTES + 4096;

/// The largest run message accepted. A proposal that lists 10,000
/// candidates fits where their region names are up to 16 bytes (about 98
/// bytes a candidate); a node refuses to submit one that does not
/// (`RunsCore::submit`).
pub const MAX_RUN_MESSAGE_BYTES: usize = 960 << 10;

/// The version of the run messages; a node ignores other versions.
pub const RUN_PROTOCOL: u32 = 10;

/// The most candidates a proposal may name: a node and as many members as
/// it keeps.
pub const MAX_CANDIDATES: usize = crate::membership::MAX_MEMBERS + 1;

/// Longest node name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 32;
/// Most listen addresses in a heartbeat.
pub const MAX_LISTEN_ADDRS: usize = 16;
/// Longest listen address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// Why bytes from a peer were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// More bytes than the bound of that message.
    #[error("{what} of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The kind of message.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not CBOR of the expected shape (garbage, truncated, wrong types).
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The kind of message.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// Well-formed CBOR with a field out of its bounds.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The kind of message.
        what: &'static str,
        /// Which field, and why.
        detail: String,
    },
}

impl WireError {
    /// The kind of problem, without details: a key for logging each kind
    /// once per peer.
    pub fn kind(&self) -> &'static str {
        match self {
            WireError::TooLarge { .. } => "too large",
            WireError::Malformed { .. } => "malformed",
            WireError::Invalid { .. } => "invalid",
        }
    }
}

/// A question to one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// What time is it? `t1` is the asker's wall clock (ns since the Unix
    /// epoch) when it sent the question.
    Clock {
        /// The asker's send time.
        t1: i64,
        /// The `(boot, seq)` of the answerer's heartbeat the asker holds:
        /// the answer's [`Pulse`] carries the heartbeat when it is not the
        /// latest. Absent from a lead's ask.
        #[serde(default)]
        known: Option<(u64, u64)>,
        /// The asker suspects the answerer, which should refute it.
        /// Absent when false, like every field here that is mostly empty:
        /// a watch asks about once a second, so its bytes are the idle
        /// mesh's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        suspect: bool,
        /// The asker's heartbeat, when it asks a node it heard of from
        /// another (which may not know it yet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        introduce: Option<Box<Heartbeat>>,
    },
    /// Tell me the members you know, unless the nodes you know have this
    /// digest (see `MeshCore::members_digest`); here is my heartbeat.
    Members {
        /// The asker's digest.
        digest: u64,
        /// The asker's heartbeat.
        heartbeat: Heartbeat,
        /// List only the members whose ids sort after this one: the
        /// answerer's last list to the asker was cut there (at
        /// [`crate::mesh::MAX_MEMBERS_ANSWER`]). Absent: from the first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Send me the scenario module with this sha256 (lower-case hex).
    Module {
        /// The module's name.
        sha256: String,
    },
    /// Tell me of the ended runs you know that are not in `known` (a node
    /// that joined after them learns of them this way).
    Runs {
        /// The run ids the asker knows.
        known: Vec<String>,
    },
    /// Send me what you hold of this run that a [`RunMessage::Held`] of
    /// yours named: its proposal, plan, arm or finish.
    Run {
        /// The run.
        run: String,
        /// The asker holds the run's proposal already: leave it out (82 KB
        /// at 1,000 nodes, where the asker lacks only the plan or the arm).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        known: bool,
    },
    /// Take this word of mine about a run: a [`RunEnvelope`] whose body is
    /// a `ready`, a `started` or a `done` ([`RunEnvelope::is_word`]), encoded. A node
    /// sends them to its run's leader and the node next in line, not to
    /// every node; the sender is the connection's authenticated peer.
    Word {
        /// The envelope, as [`encode`] makes it.
        message: serde_bytes::ByteBuf,
    },
    /// Take this shard of mine (encoded and signed as in an answer to
    /// [`Request::Shards`]): a worker sends each shard to its run's leader
    /// while the run goes.
    Shard {
        /// The shard.
        shard: serde_bytes::ByteBuf,
    },
    /// Send me the shards of this run that I lack (anti-entropy; see
    /// [`crate::sync`]).
    Shards {
        /// The run.
        run: String,
        /// What the asker holds.
        have: Vec<crate::sync::Have>,
    },
    /// When did you last hear this member? The asker watches it, as the
    /// answerer does, and has not heard it for a while: a second opinion
    /// before it suspects it (see `MeshCore::on_heard`).
    Heard {
        /// The member's peer id.
        member: String,
    },
}

/// An answer from one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The clock answer: `t1` echoed, `t2` when the question arrived and `t3`
    /// when the answer left, in the answerer's wall clock (ns).
    Clock {
        /// Echoed from the request.
        t1: i64,
        /// Receive time at the answerer.
        t2: i64,
        /// Send time at the answerer.
        t3: i64,
        /// The answerer is there, and its heartbeat if the asker's is old.
        #[serde(default)]
        pulse: Option<Box<Pulse>>,
        /// The answerer's own estimate of the asker's clock minus its own,
        /// and its bound, ns: given to a node whose clock the answerer
        /// samples for a run, so that the exchanges each side starts
        /// narrow the other's estimate too (see `MeshCore::clock_to_tell`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        yours: Option<(i64, i64)>,
    },
    /// The members the answerer knows, its own heartbeat first; empty and
    /// `same` when it knows the nodes the asker does.
    Members {
        /// Their heartbeats.
        members: Vec<Heartbeat>,
        /// The answerer knows the same nodes.
        same: bool,
        /// `members` is every member the answerer holds but suspected ones
        /// (after the ask's `after`), not cut at the answer's bound.
        complete: bool,
    },
    /// The module asked for; the asker checks its sha256.
    Module {
        /// The module.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Ended runs the asker did not know, newest first.
    Runs {
        /// The runs.
        runs: Vec<crate::runs::EndedRun>,
    },
    /// Shards the asker lacked, each encoded as on the shards topic.
    Shards {
        /// The shards.
        shards: Vec<serde_bytes::ByteBuf>,
        /// The peer holds more that the asker lacks: ask again.
        more: bool,
    },
    /// What the answerer holds of a run ([`Request::Run`]): run messages,
    /// each encoded as on gossip (a leader's signed as it would send it).
    Run {
        /// The messages.
        messages: Vec<serde_bytes::ByteBuf>,
    },
    /// The shard sent is kept.
    Kept,
    /// How long ago the answerer last heard the member asked about
    /// ([`Request::Heard`]), ms; absent when it does not know it.
    Heard {
        /// Milliseconds since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ago_ms: Option<u64>,
    },
    /// The peer would not answer, and says why (for example: the asker is not
    /// yet a member it knows).
    Refused {
        /// Why, for the asker's log.
        reason: String,
    },
}

/// A message about one run, on [`RUNS_TOPIC`]. Its author is the
/// gossip message's signed source, never a field inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnvelope {
    /// [`RUN_PROTOCOL`].
    pub protocol: u32,
    /// The run id.
    pub run: String,
    /// What is said about it.
    pub body: RunMessage,
    /// The signature of the node that said it, over the envelope without
    /// it ([`RunEnvelope::signed_part`]): a leader's arm, handoff and finish
    /// carry it, so that a node which passes them on cannot change them.
    /// The runtime checks it before the run state machine sees the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<RunSignature>,
}

/// Who signed a run message, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSignature {
    /// The signing node's peer id (its public key is in it).
    pub signer: String,
    /// The signature.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl RunEnvelope {
    /// The bytes a signature covers: the envelope without its signature.
    ///
    /// A finish that names its words by digest is signed without them:
    /// the digest stands for them.
    pub fn signed_part(&self) -> Vec<u8> {
        let body = match &self.body {
            RunMessage::Finish(f) if f.words_digest.is_some() => {
                RunMessage::Finish(f.without_words())
            }
            body => body.clone(),
        };
        encode(&RunEnvelope {
            protocol: self.protocol,
            run: self.run.clone(),
            body,
            sig: None,
        })
    }

    /// Whether this is a word a node sends its run's leader directly
    /// ([`Request::Word`]) rather than to every node.
    pub fn is_word(&self) -> bool {
        matches!(
            self.body,
            RunMessage::Ready { .. } | RunMessage::Started { .. } | RunMessage::Done { .. }
        )
    }

    /// Whether this is a leader's message that must be signed by the
    /// leader it names to be passed on: an arm, a handoff or a finish.
    pub fn is_leaders(&self) -> bool {
        matches!(
            self.body,
            RunMessage::Arm { .. } | RunMessage::Handoff(_) | RunMessage::Finish(_)
        )
    }
}

/// Identifies one assignment of a run: the term of the leader that made it
/// and that leader's version counter.
pub type PlanId = (u32, u32);

/// The run lifecycle, one message per step (see docs/wire-protocol.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMessage {
    /// From the node a run was submitted to: the run, and who may take part.
    Propose(Box<Proposal>),
    /// From the leader: who runs which share.
    Assign(PlanOnWire),
    /// From a node of the plan: module fetched and compiled, VUs initialized.
    Ready {
        /// The plan it is ready for.
        plan: PlanId,
    },
    /// From a node: it will not take part, and why.
    Refuse {
        /// Why (shown in the run's status).
        reason: String,
    },
    /// From the leader: start the plan at `t0_ns`, in the leader's wall
    /// clock (ns since the Unix epoch). An arm is final. It names its plan
    /// by id and digest ([`Plan::digest`]), not the whole plan (about
    /// 120 KB at 1,000 nodes, which gossip would have every node pass on):
    /// every node of the plan holds it, since the leader arms once they all
    /// said they were ready for it. A node that lacks the plan, or holds
    /// another (a later one that was never armed), asks for it, and takes
    /// it from any node whose copy has the digest.
    Arm {
        /// The leader's term.
        term: u32,
        /// The plan to start.
        plan: PlanId,
        /// The plan's digest.
        #[serde(with = "serde_bytes")]
        digest: Vec<u8>,
        /// The start instant.
        t0_ns: i64,
    },
    /// From a node: when it really started, in the leader's clock, and the
    /// error bound of that translation.
    Started {
        /// Start, ns since the Unix epoch, leader's clock.
        at_ns: i64,
        /// Clock error bound, ns.
        bound_ns: i64,
    },
    /// From a node: its share ended; it sent `shards` shards.
    Done {
        /// Shards sent.
        shards: u64,
        /// The share did not run to its end (the node restarted).
        interrupted: bool,
    },
    /// From any node: stop the run everywhere.
    Stop {
        /// Why, when it is not a person's stop: the `abortOnFail`
        /// threshold that failed.
        #[serde(default)]
        reason: Option<String>,
    },
    /// From the leader, after T0: a lost node's share goes on from
    /// `since_ms` on the nodes still running (final, like an arm; the node
    /// named in it must send nothing more for the run).
    Handoff(Handoff),
    /// From the leader: the run is over.
    Finish(Finish),
    /// From the proposer or the leader, in place of sending its proposal,
    /// plan or arm again: which of them it holds. A node that lacks one, or
    /// holds an older one, asks the sender for them ([`Request::Run`]):
    /// the plan and the arm are the large messages (about 100 KB each at
    /// 1,000 nodes), and gossip has every node pass each copy on.
    Held(Held),
    /// From the leader, about once a second while the run goes: the whole
    /// run's progress, from the shards its workers send it. Shards do not
    /// spread to every node until the run ends (anti-entropy spreads them
    /// then), so this is what the other nodes show meanwhile.
    Live(Live),
}

/// What the proposer or the leader of a run holds ([`RunMessage::Held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The term the sender is at.
    pub term: u32,
    /// The plan it made or adopted: its term and id.
    pub plan: Option<(u32, PlanId)>,
    /// The plan it armed (or holds the arming leader's signature of): the
    /// arm's term and the plan's id.
    pub armed: Option<(u32, PlanId)>,
    /// T0 of the arm, when the sender armed it itself: in its clock as it
    /// reads now, as a re-sent `arm` says it. A node that holds the plan
    /// armed follows this as it would the arm, without the plan (about
    /// 100 KB at 1,000 nodes); one that lacks the plan asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0_ns: Option<i64>,
}

/// The most scopes in a [`Live`]: every region, and the whole run.
pub const MAX_LIVE_SCOPES: usize = 65;

/// A run's progress as its leader merged it ([`RunMessage::Live`]), and
/// which nodes' words it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// The leader's term.
    pub term: u32,
    /// The whole run first (scope `all`), then each region.
    pub scopes: Vec<LiveScope>,
    /// The nodes of the armed plan whose `started` the leader holds: bit
    /// `i % 8` of byte `i / 8` for the plan's `i`th share, its trailing
    /// zero bytes left out. A node whose bit is set stops re-sending its
    /// `started`. Empty when `all_started`.
    #[serde(default, with = "serde_bytes")]
    pub started: Vec<u8>,
    /// The same for `done`.
    #[serde(default, with = "serde_bytes")]
    pub done: Vec<u8>,
    /// Whether the leader holds every node's `started`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_started: bool,
    /// Whether the leader holds every node's `done`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_done: bool,
}

impl Live {
    /// The progress of a plan of `n` shares without its scopes: which
    /// nodes' `started` and `done` the leader holds. Most of a run, every
    /// node has started and none is done; the bitmaps then take no room,
    /// where they took N bits each in every `live`, once a second (250
    /// bytes at 1,000 nodes, which gossip hands every node about seven
    /// times).
    pub fn heard(
        term: u32,
        n: usize,
        started: impl Fn(usize) -> bool,
        done: impl Fn(usize) -> bool,
    ) -> Live {
        let (started, all_started) = Live::bits(n, started);
        let (done, all_done) = Live::bits(n, done);
        Live {
            term,
            scopes: Vec::new(),
            started,
            done,
            all_started,
            all_done,
        }
    }

    /// A bitmap of `n` bits, bit `i` set where `set(i)`, without its
    /// trailing zero bytes; empty and `true` when every bit is set.
    fn bits(n: usize, set: impl Fn(usize) -> bool) -> (Vec<u8>, bool) {
        let mut bits = vec![0u8; n.div_ceil(8)];
        let mut all = n > 0;
        for i in 0..n {
            if set(i) {
                bits[i / 8] |= 1 << (i % 8);
            } else {
                all = false;
            }
        }
        if all {
            return (Vec::new(), true);
        }
        while bits.last() == Some(&0) {
            bits.pop();
        }
        (bits, false)
    }

    /// Whether the leader holds the `started` of the plan's `i`th node.
    pub fn has_started(&self, i: usize) -> bool {
        self.all_started || Live::has(&self.started, i)
    }

    /// Whether the leader holds the `done` of the plan's `i`th node.
    pub fn has_done(&self, i: usize) -> bool {
        self.all_done || Live::has(&self.done, i)
    }

    fn has(bits: &[u8], i: usize) -> bool {
        bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

/// One scope of a [`Live`]: the latest interval the leader holds, and the
/// counts so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveScope {
    /// `all`, or the region.
    pub scope: String,
    /// The interval: seconds since the start instant.
    pub t_s: f64,
    /// VUs running in it.
    pub vus: u64,
    /// Requests per second in it.
    pub rps: f64,
    /// 95th percentile of `http_req_duration` in it, ms.
    pub p95_ms: f64,
    /// Requests so far.
    pub requests: u64,
    /// Failed requests so far.
    pub failed: u64,
}

/// A lost node's share, handed on: from `since_ms` after T0, the nodes of
/// `to` run the parts of its segment they are given, besides their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The term of the leader that handed it on.
    pub term: u32,
    /// The armed plan.
    pub plan: PlanId,
    /// The node whose share moves.
    pub from: String,
    /// From when the others run it, ms after T0: what the node had to send
    /// before this and did not is dropped, not caught up.
    pub since_ms: u64,
    /// The parts of its segment, in order, tiling it, with who runs each.
    pub to: Vec<Assigned>,
}

/// A run as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The node the run was submitted to, which has the module (one of
    /// the candidates; the leader re-sends the proposal as is).
    pub proposer: String,
    /// The whole load.
    pub spec: RunSpec,
    /// `--region` weights.
    pub weights: Option<Vec<RegionWeight>>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// The members that may take part, fixed at submission, ascending by
    /// id: a node that joins later does not take part. Empty where
    /// `members` names them instead.
    pub candidates: Vec<Candidate>,
    /// The candidates named rather than listed: the proposer floods its
    /// proposal this way, since every node that holds the same members
    /// alike can list them itself ([`Proposal::named`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<NamedCandidates>,
}

/// The candidates of a [`Proposal`] by their count and digest
/// ([`candidates_digest`]) instead of their list: 40 bytes where the list
/// of 1,000 nodes is 82 KB, which gossip has every node receive about six
/// times. A node resolves it against its own members: this node and every
/// member it holds alive, each with the region and capacity its heartbeat
/// says, ascending by id. Where that list has another count or digest (a
/// member joined, left or is suspected here but not at the proposer), the
/// node asks for the proposal, and the answer lists the candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCandidates {
    /// How many candidates.
    pub count: u32,
    /// Their digest.
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
}

/// The length of a [`candidates_digest`].
pub const CANDIDATES_DIGEST_BYTES: usize = 32;

/// What names a list of candidates: the sha256 of the list as CBOR, in its
/// order.
pub fn candidates_digest(candidates: &[Candidate]) -> Vec<u8> {
    digest_of(&candidates)
}

/// The sha256 of a value as CBOR: how the wire names a list by digest
/// (the candidates, a plan, a finish's words) instead of carrying it.
fn digest_of<T: Serialize>(value: &T) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(encode(value)).to_vec()
}

impl Proposal {
    /// This proposal with its candidates named by count and digest rather
    /// than listed, as the proposer floods it.
    pub fn named(&self) -> Proposal {
        Proposal {
            proposer: self.proposer.clone(),
            spec: self.spec.clone(),
            weights: self.weights.clone(),
            nodes: self.nodes,
            candidates: Vec::new(),
            members: Some(NamedCandidates {
                count: u32::try_from(self.candidates.len()).unwrap_or(u32::MAX),
                digest: candidates_digest(&self.candidates),
            }),
        }
    }

    /// Lists the candidates of a proposal that names them, if `mine` (this
    /// node's own list of its members, as [`NamedCandidates`] says) is the
    /// list named; returns whether it did. A proposal that lists them is
    /// left as it is.
    pub fn resolve(&mut self, mine: Vec<Candidate>) -> bool {
        let Some(named) = &self.members else {
            return true;
        };
        let same = usize::try_from(named.count).is_ok_and(|n| n == mine.len())
            && candidates_digest(&mine) == named.digest;
        if same {
            self.candidates = mine;
            self.members = None;
        }
        same
    }
}

/// Who runs what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The term of the leader sending it.
    pub term: u32,
    /// Which plan this is (a new leader may resend an earlier one).
    pub id: PlanId,
    /// One share per node, tiling the load.
    pub shares: Vec<Assigned>,
}

impl Plan {
    /// What names the plan's content in an arm: the sha256 of its id and
    /// shares as CBOR, its term left out (a leader that takes over adopts
    /// the plan under its own term, and re-arms the same plan).
    pub fn digest(&self) -> Vec<u8> {
        digest_of(&(self.id, &self.shares))
    }
}

/// A [`Plan`] as an `assign` carries it: each share an array, its node
/// named by its place among the proposal's candidates (which a node holds
/// before it takes a plan) instead of by its 52-character id. At 1,000
/// nodes that is 20 KB instead of 119, which gossip has every node pass on.
///
/// The leader floods its plan as a [`Derivation`] instead, with no share at
/// all: every node works the shares out from the proposal it holds, as the
/// leader did. The shares are listed where a node asks for the plan, and
/// where a leader re-sends one it adopted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOnWire {
    /// The term of the leader sending it.
    pub term: u32,
    /// Which plan this is.
    pub id: PlanId,
    /// One share per node, tiling the load; empty with a `derivation`.
    pub shares: Vec<ShareOnWire>,
    /// How to work the shares out instead of listing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<Derivation>,
}

/// What a node needs besides the proposal to work out a leader's plan as
/// the leader did (`crate::runs`): which candidates it left out (dead,
/// refused, not ready in time) and which capacities it took from the
/// candidates' own announcements rather than from the proposal, by their
/// places among the proposal's candidates; and the digest of the plan that
/// gives ([`Plan::digest`]), which a node checks before it takes it. At
/// 1,000 nodes with none left out, under 100 bytes instead of 20 KB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derivation {
    /// The candidates left out, ascending.
    pub out: Vec<u32>,
    /// `[candidate, capacity]` where the capacity is not the proposal's,
    /// ascending by candidate.
    pub capacities: Vec<(u32, u32)>,
    /// The digest of the plan.
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
}

/// One share of a [`PlanOnWire`]: `[candidate, start, end, denominator,
/// first_vu_id]`, the node as its index among the proposal's candidates
/// and its segment as `[start/denominator, end/denominator)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareOnWire(pub u32, pub u64, pub u64, pub u64, pub u64);

impl ShareOnWire {
    /// Its segment, if its ends are consistent.
    pub fn segment(&self) -> Option<ExecutionSegment> {
        ExecutionSegment::new(self.1, self.2, self.3).ok()
    }
}

impl Plan {
    /// The plan as an `assign` carries it, or `None` if a share's node is
    /// not among `candidates` (a plan is made of candidates).
    pub fn to_wire(&self, candidates: &[Candidate]) -> Option<PlanOnWire> {
        let index: BTreeMap<&str, u32> = candidates
            .iter()
            .zip(0u32..)
            .map(|(c, i)| (c.id.as_str(), i))
            .collect();
        let shares = self
            .shares
            .iter()
            .map(|s| {
                let (start, end, denominator) = s.segment.parts();
                let node = *index.get(s.node.as_str())?;
                Some(ShareOnWire(node, start, end, denominator, s.first_vu_id))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PlanOnWire {
            term: self.term,
            id: self.id,
            shares,
            derivation: None,
        })
    }
}

impl PlanOnWire {
    /// The plan, its nodes looked up among `candidates` (the proposal's),
    /// or why it names none. A plan given by its derivation is worked out
    /// by `crate::runs`, not here.
    pub fn resolve(&self, candidates: &[Candidate]) -> Result<Plan, String> {
        if self.derivation.is_some() {
            return Err("a plan to work out from the proposal, not a list of shares".into());
        }
        let shares = self
            .shares
            .iter()
            .map(|share| {
                let node = usize::try_from(share.0)
                    .ok()
                    .and_then(|i| candidates.get(i))
                    .ok_or_else(|| {
                        format!(
                            "a share of candidate {}, of {} candidates",
                            share.0,
                            candidates.len()
                        )
                    })?;
                let segment = share
                    .segment()
                    .ok_or_else(|| "an invalid segment".to_owned())?;
                Ok(Assigned {
                    node: node.id.clone(),
                    segment,
                    first_vu_id: share.4,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Plan {
            term: self.term,
            id: self.id,
            shares,
        })
    }
}

/// The length of a [`Plan::digest`].
pub const PLAN_DIGEST_BYTES: usize = 32;

/// One node's share in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assigned {
    /// The node.
    pub node: String,
    /// Its slice of the load.
    pub segment: ExecutionSegment,
    /// Its first VU id.
    pub first_vu_id: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// The term of the leader declaring it.
    pub term: u32,
    /// The outcome.
    pub outcome: Outcome,
    /// Nodes of the plan that were lost (their data is kept up to the loss).
    pub lost: Vec<String>,
    /// The shares handed on, as the leader last knew them: the same on
    /// every node once the run is over.
    #[serde(default)]
    pub handoffs: Vec<Handoff>,
    /// The words the leader held of each node of the armed plan, in the
    /// plan's order: `started` and `done` go to the leader alone while the
    /// run goes, so this is how every other node learns them. Empty when
    /// nothing was armed, and in the copies the gossip floods: a node
    /// asks a node that holds them ([`Finish::words_digest`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<NodeWords>,
    /// The sha256 of the words as CBOR ([`words_digest`]), whenever the
    /// leader held any. The leader's signature covers the digest and not
    /// the words ([`RunEnvelope::signed_part`]), so one signature serves
    /// the finish with or without them, and any node that holds the words
    /// can pass them on: each node receives them once, from the node that
    /// passed it the finish, rather than in every copy the gossip hands it
    /// (about seven of 20 KB each at 1,000 nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words_digest: Option<serde_bytes::ByteBuf>,
}

/// The length of a [`words_digest`].
pub const WORDS_DIGEST_BYTES: usize = 32;

/// What names a finish's words: the sha256 of the list as CBOR, in the
/// plan's order.
pub fn words_digest(words: &[NodeWords]) -> Vec<u8> {
    digest_of(&words)
}

impl Finish {
    /// This finish without its words, as the gossip floods it.
    pub fn without_words(&self) -> Finish {
        Finish {
            words: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether it names words by digest and does not carry them.
    pub fn lacks_words(&self) -> bool {
        self.words.is_empty() && self.words_digest.is_some()
    }

    /// Whether the words it carries are the ones its digest names (a
    /// finish without words has nothing to match).
    pub fn words_match(&self) -> bool {
        self.words.is_empty()
            || self
                .words_digest
                .as_ref()
                .is_some_and(|d| d.as_slice() == words_digest(&self.words).as_slice())
    }
}

/// One node's words as a [`Finish`] carries them: its real start (in the
/// arming leader's clock, and the error bound, ns) as its `started` said,
/// and its shards and whether it was interrupted as its `done` said.
pub type NodeWords = (Option<(i64, i64)>, Option<(u64, bool)>);

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every node of the plan is done or lost.
    Complete,
    /// Someone stopped it.
    Stopped {
        /// The node that was asked to stop it.
        by: String,
        /// Why, when a threshold stopped it (`abortOnFail`).
        #[serde(default)]
        reason: Option<String>,
    },
    /// It could not run.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Checks a run id: 1 to 64 of ASCII letters, digits, `-` and `_`. Run
/// ids name directories and appear in URLs.
pub fn validate_run_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "run id {:?} is not 1 to 64 of ASCII letters, digits, - and _",
            id.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// Decodes a run message from gossip and checks its bounds and shape.
pub fn decode_run(bytes: &[u8]) -> Result<RunEnvelope, WireError> {
    const WHAT: &str = "run message";
    let invalid = |detail: String| WireError::Invalid { what: WHAT, detail };
    let env: RunEnvelope = decode_bounded(bytes, WHAT, MAX_RUN_MESSAGE_BYTES)?;
    if env.protocol != RUN_PROTOCOL {
        return Err(invalid(format!(
            "protocol {} (this node speaks {RUN_PROTOCOL}); upgrade the older node",
            env.protocol
        )));
    }
    validate_run_id(&env.run).map_err(invalid)?;
    if let Some(sig) = &env.sig {
        check_len(WHAT, "a signer id", &sig.signer, 128)?;
        if sig.bytes.len() > 128 {
            return Err(invalid(format!("a signature of {} bytes", sig.bytes.len())));
        }
    }
    match &env.body {
        RunMessage::Propose(p) => {
            p.spec.validate().map_err(|e| invalid(e.0))?;
            check_len(WHAT, "the proposer", &p.proposer, 128)?;
            match &p.members {
                Some(named) => {
                    if !p.candidates.is_empty() {
                        return Err(invalid("candidates both listed and named by digest".into()));
                    }
                    if named.count == 0 || named.count as usize > MAX_CANDIDATES {
                        return Err(invalid(format!(
                            "{} candidates (1 to {MAX_CANDIDATES})",
                            named.count
                        )));
                    }
                    if named.digest.len() != CANDIDATES_DIGEST_BYTES {
                        return Err(invalid(format!(
                            "a candidates digest of {} bytes, not {CANDIDATES_DIGEST_BYTES}",
                            named.digest.len()
                        )));
                    }
                }
                None => {
                    if p.candidates.is_empty() || p.candidates.len() > MAX_CANDIDATES {
                        return Err(invalid(format!(
                            "{} candidates (1 to {MAX_CANDIDATES})",
                            p.candidates.len()
                        )));
                    }
                    if !p.candidates.iter().any(|c| c.id == p.proposer) {
                        return Err(invalid("the proposer is not among the candidates".into()));
                    }
                }
            }
            let mut ids = std::collections::BTreeSet::new();
            for c in &p.candidates {
                check_len(WHAT, "a candidate id", &c.id, 128)?;
                validate_region(&c.region).map_err(invalid)?;
                if !ids.insert(c.id.as_str()) {
                    return Err(invalid(format!("candidate {} is named twice", c.id)));
                }
            }
            for w in p.weights.iter().flatten() {
                validate_region(&w.region).map_err(invalid)?;
                if w.weight == 0 || w.weight > crate::assign::MAX_WEIGHT {
                    return Err(invalid(format!("region weight {}", w.weight)));
                }
            }
            if p.spec.targets.len() > 64 {
                return Err(invalid("more than 64 targets".into()));
            }
            for t in &p.spec.targets {
                check_len(WHAT, "a target", t, 256)?;
            }
            check_len(WHAT, "the scenario name", &p.spec.scenario, 256)?;
            crate::threshold::parse_all(&p.spec.thresholds).map_err(|e| invalid(e.to_string()))?;
            if super::module_name::check_name(&p.spec.module_sha256).is_err() {
                return Err(invalid("the module name is not a sha256".into()));
            }
        }
        RunMessage::Arm { digest, .. } => {
            if digest.len() != PLAN_DIGEST_BYTES {
                return Err(invalid(format!(
                    "a plan digest of {} bytes, not {PLAN_DIGEST_BYTES}",
                    digest.len()
                )));
            }
        }
        RunMessage::Assign(PlanOnWire {
            shares,
            derivation: Some(d),
            ..
        }) => {
            let ascending = |places: &[u32]| {
                places.windows(2).all(|w| w[0] < w[1])
                    && places.last().is_none_or(|l| (*l as usize) < MAX_CANDIDATES)
            };
            let with_capacities: Vec<u32> = d.capacities.iter().map(|c| c.0).collect();
            if !shares.is_empty() || !ascending(&d.out) || !ascending(&with_capacities) {
                return Err(invalid(
                    "a derived plan with shares, or candidates out of order or range".into(),
                ));
            }
            if d.digest.len() != PLAN_DIGEST_BYTES {
                return Err(invalid(format!(
                    "a plan digest of {} bytes, not {PLAN_DIGEST_BYTES}",
                    d.digest.len()
                )));
            }
        }
        RunMessage::Assign(plan) => {
            if plan.shares.is_empty() || plan.shares.len() > MAX_CANDIDATES {
                return Err(invalid(format!("{} shares", plan.shares.len())));
            }
            let mut segments = Vec::with_capacity(plan.shares.len());
            for s in &plan.shares {
                if usize::try_from(s.0).map_or(true, |i| i >= MAX_CANDIDATES) {
                    return Err(invalid(format!("a share of candidate {}", s.0)));
                }
                segments.push(
                    s.segment()
                        .ok_or_else(|| invalid("an invalid segment".into()))?,
                );
            }
            let tiles = segments
                .first()
                .is_some_and(ExecutionSegment::starts_at_zero)
                && segments.last().is_some_and(ExecutionSegment::ends_at_one)
                && segments.windows(2).all(|w| w[0].adjoins(&w[1]));
            if !tiles {
                return Err(invalid("the shares do not tile the load".into()));
            }
        }
        RunMessage::Refuse { reason } => check_len(WHAT, "reason", reason, 1024)?,
        RunMessage::Finish(f) => {
            match &f.outcome {
                Outcome::Failed { reason } => check_len(WHAT, "reason", reason, 1024)?,
                Outcome::Stopped { by, reason } => {
                    check_len(WHAT, "the stopping node", by, 1024)?;
                    if let Some(reason) = reason {
                        check_len(WHAT, "reason", reason, 1024)?;
                    }
                }
                Outcome::Complete => {}
            }
            if f.lost.len() > MAX_CANDIDATES {
                return Err(invalid("too many lost nodes".into()));
            }
            if f.handoffs.len() > MAX_CANDIDATES {
                return Err(invalid("too many handoffs".into()));
            }
            for h in &f.handoffs {
                check_handoff(h).map_err(invalid)?;
            }
            if f.words.len() > MAX_CANDIDATES {
                return Err(invalid("words of more nodes than a plan holds".into()));
            }
            if f.words_digest
                .as_ref()
                .is_some_and(|d| d.len() != WORDS_DIGEST_BYTES)
            {
                return Err(invalid(format!(
                    "a words digest that is not {WORDS_DIGEST_BYTES} bytes"
                )));
            }
            if !f.words_match() {
                return Err(invalid(
                    "words that are not the ones its digest names (or no digest)".into(),
                ));
            }
        }
        RunMessage::Handoff(h) => check_handoff(h).map_err(invalid)?,
        RunMessage::Live(live) => {
            if live.scopes.len() > MAX_LIVE_SCOPES {
                return Err(invalid(format!("{} live scopes", live.scopes.len())));
            }
            for s in &live.scopes {
                check_len(WHAT, "a live scope", &s.scope, 64)?;
                if [s.t_s, s.rps, s.p95_ms]
                    .iter()
                    .any(|v| !v.is_finite() || *v < 0.0)
                {
                    return Err(invalid(format!(
                        "live scope {} has a negative or non-finite figure",
                        s.scope
                    )));
                }
            }
            if live.started.len().max(live.done.len()) > MAX_CANDIDATES.div_ceil(8) {
                return Err(invalid("a live bitmap longer than the most shares".into()));
            }
        }
        RunMessage::Stop {
            reason: Some(reason),
        } => check_len(WHAT, "reason", reason, 1024)?,
        RunMessage::Ready { .. }
        | RunMessage::Started { .. }
        | RunMessage::Done { .. }
        | RunMessage::Held(_)
        | RunMessage::Stop { reason: None } => {}
    }
    Ok(env)
}

/// Checks a handoff's shape: names of sane length, at least one part and
/// at most [`MAX_CANDIDATES`], valid segments, each adjoining the next (that
/// they tile the lost node's segment is checked against the plan).
fn check_handoff(h: &Handoff) -> Result<(), String> {
    if h.from.is_empty() || h.from.len() > 128 {
        return Err("a handoff names no node, or one with too long an id".into());
    }
    if h.to.is_empty() || h.to.len() > MAX_CANDIDATES {
        return Err(format!("a handoff with {} parts", h.to.len()));
    }
    for a in &h.to {
        if a.node.is_empty() || a.node.len() > 128 || !a.segment.is_valid() {
            return Err("a handoff part with an invalid node id or segment".into());
        }
    }
    if !h.to.windows(2).all(|w| w[0].segment.adjoins(&w[1].segment)) {
        return Err("the parts of a handoff do not follow each other".into());
    }
    Ok(())
}

/// Encodes any wire message. Encoding our own types cannot fail for lack of
/// input validity; a failure would be a bug, so it is reported, not hidden.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if let Err(e) = ciborium::into_writer(message, &mut out) {
        tracing::error!("encoding a wire message failed: {e}");
        out.clear();
    }
    out
}

fn decode_bounded<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    max: usize,
) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    ciborium::from_reader(bytes).map_err(|e| WireError::Malformed {
        what,
        detail: e.to_string(),
    })
}

/// Checks a text field from a peer: its length, and no control characters
/// (it is printed on terminals and in logs).
fn check_len(what: &'static str, field: &str, value: &str, max: usize) -> Result<(), WireError> {
    if value.len() > max {
        return Err(WireError::Invalid {
            what,
            detail: format!("{field} is {} bytes, more than {max}", value.len()),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(WireError::Invalid {
            what,
            detail: format!("{field} holds control characters"),
        });
    }
    Ok(())
}

/// Decodes a heartbeat from gossip and checks its fields' bounds.
pub fn decode_heartbeat(bytes: &[u8]) -> Result<Heartbeat, WireError> {
    let hb: Heartbeat = decode_bounded(bytes, "heartbeat", MAX_HEARTBEAT_BYTES)?;
    check_heartbeat(hb)
}

/// A member's watch found a member silent: gossip on [`SUSPECTS_TOPIC`].
/// Its author (the gossip's signed source) is the watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspicion {
    /// The member found silent.
    pub id: String,
    /// Its boot, as the watcher last heard.
    pub boot: u64,
    /// Its seq, as the watcher last heard.
    pub seq: u64,
}

/// Decodes a suspicion from gossip.
pub fn decode_suspicion(bytes: &[u8]) -> Result<Suspicion, WireError> {
    let s: Suspicion = decode_bounded(bytes, "suspicion", 1024)?;
    check_len("suspicion", "id", &s.id, 128)?;
    Ok(s)
}

/// Checks a heartbeat's fields' bounds, wherever it came from.
fn check_heartbeat(hb: Heartbeat) -> Result<Heartbeat, WireError> {
    const WHAT: &str = "heartbeat";
    check_len(WHAT, "id", &hb.id, 128)?;
    check_len(WHAT, "name", &hb.name, MAX_NAME_LEN)?;
    check_len(WHAT, "version", &hb.version, 64)?;
    if let Err(e) = validate_region(&hb.region) {
        return Err(WireError::Invalid {
            what: WHAT,
            detail: e,
        });
    }
    if hb.listen.len() > MAX_LISTEN_ADDRS {
        return Err(WireError::Invalid {
            what: WHAT,
            detail: format!(
                "{} listen addresses, more than {MAX_LISTEN_ADDRS}",
                hb.listen.len()
            ),
        });
    }
    for addr in &hb.listen {
        check_len(WHAT, "a listen address", addr, MAX_ADDR_LEN)?;
    }
    if !hb.cpu.is_finite() || hb.cpu < 0.0 {
        return Err(WireError::Invalid {
            what: WHAT,
            detail: format!("cpu is {}", hb.cpu),
        });
    }
    Ok(hb)
}

/// Decodes a request-response question.
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let mut request: Request = decode_bounded(bytes, "request", MAX_REQUEST_BYTES)?;
    match &mut request {
        Request::Members {
            heartbeat, after, ..
        } => {
            *heartbeat = check_heartbeat(heartbeat.clone())?;
            if let Some(after) = after {
                check_len("request", "after", after, 128)?;
            }
        }
        Request::Clock {
            introduce: Some(heartbeat),
            ..
        } => **heartbeat = check_heartbeat((**heartbeat).clone())?,
        Request::Heard { member } => check_len("request", "member", member, 128)?,
        _ => {}
    }
    if !matches!(
        request,
        Request::Shards { .. } | Request::Runs { .. } | Request::Shard { .. }
    ) && bytes.len() > MAX_RPC_BYTES
    {
        return Err(WireError::TooLarge {
            what: "request",
            len: bytes.len(),
            max: MAX_RPC_BYTES,
        });
    }
    Ok(request)
}

/// Decodes a request-response answer. Module answers may be larger than
/// others: `max` is [`MAX_MODULE_RESPONSE_BYTES`] for the codec, which
/// cannot know the question.
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let mut response: Response = decode_bounded(bytes, "response", MAX_MODULE_RESPONSE_BYTES)?;
    let max = match response {
        Response::Module { .. } => MAX_MODULE_RESPONSE_BYTES,
        Response::Shards { .. }
        | Response::Runs { .. }
        | Response::Members { .. }
        | Response::Run { .. } => MAX_SHARDS_RESPONSE_BYTES,
        Response::Clock { .. }
        | Response::Refused { .. }
        | Response::Kept
        | Response::Heard { .. } => MAX_RPC_BYTES,
    };
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            what: "response",
            len: bytes.len(),
            max,
        });
    }
    if let Response::Clock {
        yours: Some((_, bound)),
        ..
    } = response
        && bound < 0
    {
        return Err(WireError::Invalid {
            what: "response",
            detail: format!("the clock bound told is {bound} ns, below zero"),
        });
    }
    match &mut response {
        Response::Refused { reason } => check_len("response", "reason", reason, 1024)?,
        Response::Clock {
            pulse: Some(pulse), ..
        } => {
            if let Some(hb) = pulse.heartbeat.take() {
                pulse.heartbeat = Some(check_heartbeat(hb)?);
            }
            if !pulse.cpu.is_finite() || pulse.cpu < 0.0 {
                return Err(WireError::Invalid {
                    what: "response",
                    detail: format!("cpu is {}", pulse.cpu),
                });
            }
        }
        Response::Members { members, .. } => {
            if members.len() > crate::mesh::MAX_MEMBERS_ANSWER {
                return Err(WireError::Invalid {
                    what: "response",
                    detail: format!(
                        "{} members, more than {}",
                        members.len(),
                        crate::mesh::MAX_MEMBERS_ANSWER
                    ),
                });
            }
            *members = std::mem::take(members)
                .into_iter()
                .map(check_heartbeat)
                .collect::<Result<_, _>>()?;
        }
        _ => {}
    }
    Ok(response)
}

/// Checks a region name: 1 to 32 of `a-z`, `0-9` and `-`. Regions appear in
/// flags, file names and reports, so they are kept plain.
pub fn validate_region(region: &str) -> Result<(), String> {
    let plain = region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if region.is_empty() || region.len() > MAX_REGION_LEN || !plain {
        return Err(format!(
            "region {region:?} is not 1 to {MAX_REGION_LEN} of a-z, 0-9 and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::PROTOCOL;
    use crate::rng::Rng;

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            protocol: PROTOCOL,
            id: "12D3KooWExample".into(),
            name: "fra-1".into(),
            region: "fra".into(),
            boot: 1_700_000_000_000_000_000,
            seq: 42,
            cores: 16,
            vu_limit: 20_000,
            version: "0.1.0".into(),
            cpu: 0.25,
            sockets: 12,
            listen: vec!["/ip4/127.0.1.1/tcp/7400".into()],
            leaving: false,
            clock_epoch: 0,
            busy: false,
        }
    }

    #[test]
    fn round_trips() {
        let hb = heartbeat();
        assert_eq!(decode_heartbeat(&encode(&hb)), Ok(hb.clone()));
        let req = Request::Clock {
            t1: -5,
            known: Some((1, 2)),
            suspect: true,
            introduce: Some(Box::new(hb.clone())),
        };
        assert_eq!(decode_request(&encode(&req)), Ok(req));
        // A watch's ask leaves out what is empty, and still decodes.
        let watch = Request::Clock {
            t1: 1_800_000_000_000_000_000,
            known: Some((1_800_000_000_000_000_000, 2)),
            suspect: false,
            introduce: None,
        };
        let bytes = encode(&watch);
        assert_eq!(decode_request(&bytes), Ok(watch));
        assert!(bytes.len() <= 45, "{} bytes", bytes.len());
        let req = Request::Members {
            digest: 7,
            heartbeat: hb.clone(),
            after: None,
        };
        assert_eq!(decode_request(&encode(&req)), Ok(req));
        let page = Request::Members {
            digest: 7,
            heartbeat: hb.clone(),
            after: Some("12D3KooW".repeat(6)),
        };
        assert_eq!(decode_request(&encode(&page)), Ok(page));
        let long = Request::Members {
            digest: 7,
            heartbeat: hb.clone(),
            after: Some("x".repeat(129)),
        };
        assert!(decode_request(&encode(&long)).is_err());
        let s = Suspicion {
            id: "a".into(),
            boot: 1,
            seq: 2,
        };
        assert_eq!(decode_suspicion(&encode(&s)), Ok(s));
        for resp in [
            Response::Clock {
                t1: 1,
                t2: 2,
                t3: 3,
                pulse: None,
                yours: None,
            },
            Response::Clock {
                t1: 1,
                t2: 2,
                t3: 3,
                pulse: None,
                yours: Some((-4_000_000, 250_000)),
            },
            Response::Clock {
                t1: 1,
                t2: 2,
                t3: 3,
                yours: None,
                pulse: Some(Box::new(Pulse {
                    boot: 1,
                    seq: 2,
                    cpu: 0.5,
                    sockets: 3,
                    heartbeat: None,
                })),
            },
            Response::Clock {
                t1: 1,
                t2: 2,
                t3: 3,
                yours: None,
                pulse: Some(Box::new(Pulse {
                    boot: 1,
                    seq: 2,
                    cpu: 0.5,
                    sockets: 3,
                    heartbeat: Some(hb.clone()),
                })),
            },
            Response::Members {
                members: vec![hb.clone(), hb.clone()],
                same: false,
                complete: true,
            },
            Response::Refused {
                reason: "not a member".into(),
            },
        ] {
            assert_eq!(decode_response(&encode(&resp)), Ok(resp));
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_future_protocols_still_decode() {
        #[derive(Serialize)]
        struct Newer {
            #[serde(flatten)]
            hb: Heartbeat,
            gpu: u32,
        }
        let mut hb = heartbeat();
        hb.protocol = PROTOCOL + 1;
        let bytes = encode(&Newer {
            hb: hb.clone(),
            gpu: 8,
        });
        assert_eq!(decode_heartbeat(&bytes), Ok(hb));
    }

    #[test]
    fn every_truncation_and_random_bytes_are_errors_not_panics() {
        let hb = encode(&heartbeat());
        for cut in 0..hb.len() {
            assert!(decode_heartbeat(&hb[..cut]).is_err(), "cut at {cut}");
        }
        let resp = encode(&Response::Clock {
            t1: 1,
            t2: 2,
            t3: 3,
            pulse: None,
            yours: Some((1, 2)),
        });
        let below_zero = encode(&Response::Clock {
            t1: 1,
            t2: 2,
            t3: 3,
            pulse: None,
            yours: Some((1, -2)),
        });
        assert!(
            matches!(decode_response(&below_zero), Err(WireError::Invalid { .. })),
            "a clock bound below zero is refused"
        );
        for cut in 0..resp.len() {
            assert!(decode_response(&resp[..cut]).is_err());
            assert!(decode_request(&resp[..cut]).is_err());
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in 0..2_000 {
            let bytes: Vec<u8> = (0..len % 300).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_heartbeat(&bytes);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }
        // Random mutations of a valid heartbeat: decoded or refused, never a panic.
        for _ in 0..5_000 {
            let mut bytes = hb.clone();
            let i = (rng.next_u64() as usize) % bytes.len();
            bytes[i] = rng.next_u64() as u8;
            if let Ok(decoded) = decode_heartbeat(&bytes) {
                assert!(decoded.name.len() <= MAX_NAME_LEN);
            }
        }
    }

    fn proposal_of(spec: RunSpec) -> Vec<u8> {
        encode(&RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: "r1".into(),
            body: RunMessage::Propose(Box::new(Proposal {
                proposer: "p".into(),
                spec,
                weights: None,
                nodes: None,
                candidates: vec![Candidate {
                    id: "p".into(),
                    region: "fra".into(),
                    capacity: 10,
                }],
                members: None,
            })),
            sig: None,
        })
    }

    #[test]
    fn a_live_says_which_words_the_leader_holds_in_bitmaps_that_take_no_room_when_all_or_none() {
        let n = 1000;
        // Most of a run: every node started, none done.
        let under_way = Live::heard(3, n, |_| true, |_| false);
        assert!(under_way.all_started && !under_way.all_done);
        assert!(under_way.started.is_empty() && under_way.done.is_empty());
        assert!((0..n).all(|i| under_way.has_started(i) && !under_way.has_done(i)));
        let bytes = encode(&RunMessage::Live(under_way.clone())).len();
        let full = encode(&RunMessage::Live(Live {
            started: vec![0xff; n / 8],
            all_started: false,
            ..under_way
        }))
        .len();
        assert!(
            bytes < 64 && full > bytes + 100,
            "{bytes} bytes, {full} with the bitmap"
        );
        // Some: the bitmap up to its last set bit.
        let some = Live::heard(3, n, |i| i % 3 == 0, |i| i == 9 || i == 17);
        assert!(!some.all_started && !some.all_done);
        assert_eq!(some.done, vec![0, 0b10, 0b10]);
        assert!((0..n).all(|i| some.has_started(i) == (i % 3 == 0)));
        assert!((0..n).all(|i| some.has_done(i) == (i == 9 || i == 17)));
        let back = match decode_run(&encode(&RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: "r1".into(),
            body: RunMessage::Live(some.clone()),
            sig: None,
        }))
        .map(|e| e.body)
        {
            Ok(RunMessage::Live(live)) => live,
            other => panic!("not a live: {other:?}"),
        };
        assert_eq!(back, some);
        // No node: nothing is held, not all.
        let empty = Live::heard(3, 0, |_| true, |_| true);
        assert!(!empty.all_started && !empty.has_started(0));
    }

    #[test]
    fn a_live_with_a_figure_that_is_not_a_number_is_refused() {
        let live = |rps: f64| {
            encode(&RunEnvelope {
                protocol: RUN_PROTOCOL,
                run: "r1".into(),
                body: RunMessage::Live(Live {
                    term: 0,
                    scopes: vec![LiveScope {
                        scope: "all".into(),
                        t_s: 1.0,
                        vus: 2,
                        rps,
                        p95_ms: 3.5,
                        requests: 4,
                        failed: 0,
                    }],
                    ..Live::heard(0, 8, |i| i == 0, |_| false)
                }),
                sig: None,
            })
        };
        assert!(decode_run(&live(10.5)).is_ok());
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(
                matches!(decode_run(&live(bad)), Err(WireError::Invalid { .. })),
                "rps {bad}"
            );
        }
    }

    #[test]
    fn a_proposal_names_its_candidates_or_lists_them_not_both_and_resolves_only_to_that_list() {
        let spec = RunSpec::new(
            "a".repeat(64),
            crate::spec::Executor::ConstantVus {
                vus: 1,
                duration: std::time::Duration::from_secs(1),
            },
        );
        let listed = match decode_run(&proposal_of(spec)).map(|e| e.body) {
            Ok(RunMessage::Propose(p)) => *p,
            other => panic!("not a proposal: {other:?}"),
        };
        let named = listed.named();
        let envelope = |p: Proposal| {
            encode(&RunEnvelope {
                protocol: RUN_PROTOCOL,
                run: "r1".into(),
                body: RunMessage::Propose(Box::new(p)),
                sig: None,
            })
        };
        assert!(decode_run(&envelope(named.clone())).is_ok());
        let refused = |p: Proposal| match decode_run(&envelope(p)) {
            Err(WireError::Invalid { detail, .. }) => detail,
            other => panic!("not refused: {other:?}"),
        };
        let both = Proposal {
            candidates: listed.candidates.clone(),
            ..named.clone()
        };
        assert!(refused(both).contains("both listed and named"));
        let mut none = named.clone();
        if let Some(m) = none.members.as_mut() {
            m.count = 0;
        }
        assert!(refused(none).contains("0 candidates"));
        let mut short = named.clone();
        if let Some(m) = short.members.as_mut() {
            m.digest.truncate(8);
        }
        assert!(refused(short).contains("digest of 8 bytes"));

        // It resolves to the list it was made of, and to no other.
        let mut other = listed.candidates.clone();
        other[0].capacity += 1;
        let mut p = named.clone();
        assert!(!p.resolve(other));
        assert_eq!(p, named);
        assert!(p.resolve(listed.candidates.clone()));
        assert_eq!(p, listed);
    }

    /// A run of 10,000 nodes: the run messages that grow with its nodes,
    /// at their largest, are accepted; one more candidate than a node keeps
    /// members is not, nor a proposal whose listed candidates outgrow a run
    /// message.
    #[test]
    fn the_run_messages_of_ten_thousand_nodes_fit_their_bounds() {
        let n = 10_000;
        // A peer id as libp2p writes an Ed25519 key's: 52 characters.
        let candidates = |n: usize, region: &str| -> Vec<Candidate> {
            (0..n)
                .map(|i| Candidate {
                    id: format!("12D3KooW{i:044}"),
                    region: region.into(),
                    capacity: 1_000_000,
                })
                .collect()
        };
        let spec = RunSpec::new(
            "a".repeat(64),
            crate::spec::Executor::ConstantVus {
                vus: 100_000,
                duration: std::time::Duration::from_secs(60),
            },
        );
        let envelope = |body: RunMessage| {
            encode(&RunEnvelope {
                protocol: RUN_PROTOCOL,
                run: "r1".into(),
                body,
                sig: None,
            })
        };
        let proposal = |candidates: Vec<Candidate>| {
            envelope(RunMessage::Propose(Box::new(Proposal {
                proposer: candidates[0].id.clone(),
                spec: spec.clone(),
                weights: None,
                nodes: None,
                candidates,
                members: None,
            })))
        };
        let fits = proposal(candidates(n, &"r".repeat(16)));
        assert!(decode_run(&fits).is_ok(), "{} bytes", fits.len());
        let long = proposal(candidates(n, &"r".repeat(MAX_REGION_LEN)));
        assert!(
            matches!(decode_run(&long), Err(WireError::TooLarge { .. })),
            "{} bytes",
            long.len()
        );
        let most = proposal(candidates(MAX_CANDIDATES, "fra"));
        assert!(decode_run(&most).is_ok(), "{} bytes", most.len());
        let over = proposal(candidates(MAX_CANDIDATES + 1, "fra"));
        assert!(matches!(decode_run(&over), Err(WireError::Invalid { .. })));

        // The plan listed, each share one n-th of the load.
        let shares = (0..n as u64)
            .map(|i| ShareOnWire(i as u32, i, i + 1, n as u64, i * 10))
            .collect();
        let plan = envelope(RunMessage::Assign(PlanOnWire {
            term: 1,
            id: (1, 1),
            shares,
            derivation: None,
        }));
        assert!(decode_run(&plan).is_ok(), "{} bytes", plan.len());
        assert!(plan.len() < MAX_GOSSIP_BYTES - 64 * 1024);

        // The finish with every node's words, and every node lost.
        let words: Vec<NodeWords> = vec![
            (
                Some((1_700_000_000_000_000_000, 1_000_000)),
                Some((61, true))
            );
            n
        ];
        let finish = envelope(RunMessage::Finish(Finish {
            term: 1,
            outcome: Outcome::Complete,
            lost: candidates(n, "fra").into_iter().map(|c| c.id).collect(),
            handoffs: Vec::new(),
            words_digest: Some(serde_bytes::ByteBuf::from(words_digest(&words))),
            words,
        }));
        assert!(decode_run(&finish).is_ok(), "{} bytes", finish.len());
    }

    #[test]
    fn a_finish_is_signed_over_its_words_digest_and_carries_only_the_words_it_names() {
        let words: Vec<NodeWords> = vec![
            (Some((1_700_000_000_000_000_000, 1_000)), Some((3, false))),
            (None, Some((2, true))),
            (None, None),
        ];
        let full = Finish {
            term: 1,
            outcome: Outcome::Complete,
            lost: vec!["c".into()],
            handoffs: Vec::new(),
            words_digest: Some(serde_bytes::ByteBuf::from(words_digest(&words))),
            words: words.clone(),
        };
        let envelope = |f: Finish| RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: "r1".into(),
            body: RunMessage::Finish(f),
            sig: None,
        };
        // One signature serves the finish with its words and without.
        let bare = full.without_words();
        assert!(bare.lacks_words() && !full.lacks_words());
        assert_eq!(
            envelope(full.clone()).signed_part(),
            envelope(bare.clone()).signed_part()
        );
        // The digest is signed: another digest is another signed part.
        let mut other = bare.clone();
        other.words_digest = Some(serde_bytes::ByteBuf::from(vec![0; WORDS_DIGEST_BYTES]));
        assert_ne!(
            envelope(other).signed_part(),
            envelope(bare.clone()).signed_part()
        );
        // Without a digest, the words are signed themselves.
        let undigested = Finish {
            words: Vec::new(),
            words_digest: None,
            ..full.clone()
        };
        assert_ne!(
            envelope(undigested.clone()).signed_part(),
            envelope(bare.clone()).signed_part()
        );
        for f in [full.clone(), bare, undigested] {
            assert!(decode_run(&encode(&envelope(f))).is_ok());
        }
        let refused = |f: Finish| match decode_run(&encode(&envelope(f))) {
            Err(WireError::Invalid { detail, .. }) => detail,
            other => panic!("not refused: {other:?}"),
        };
        // Words that are not the ones named, or words named by no digest.
        let mut changed = full.clone();
        changed.words[1].1 = Some((20, true));
        assert!(refused(changed).contains("not the ones its digest names"));
        let unnamed = Finish {
            words_digest: None,
            ..full.clone()
        };
        assert!(refused(unnamed).contains("not the ones its digest names"));
        let mut short = full;
        short.words_digest = Some(serde_bytes::ByteBuf::from(vec![0; 8]));
        assert!(refused(short).contains("not 32 bytes"));
    }

    #[test]
    fn a_forged_proposal_is_held_to_the_limits_of_the_cli() {
        let spec = RunSpec::new(
            "a".repeat(64),
            crate::spec::Executor::ConstantVus {
                vus: 1,
                duration: std::time::Duration::from_secs(1),
            },
        );
        assert!(decode_run(&proposal_of(spec.clone())).is_ok());
        let refused = |spec: RunSpec| match decode_run(&proposal_of(spec)) {
            Err(WireError::Invalid { detail, .. }) => detail,
            other => panic!("not refused: {other:?}"),
        };
        let mut forged = spec.clone();
        forged.graceful_stop = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
        assert!(refused(forged).contains("graceful_stop"));
        let mut forged = spec.clone();
        forged.iteration_timeout = std::time::Duration::ZERO;
        assert!(refused(forged).contains("iteration_timeout"));
        let mut forged = spec;
        forged.vu_memory_limit = 1 << 40;
        assert!(refused(forged).contains("1 to 4096 MiB"));
    }

    #[test]
    fn oversized_and_out_of_bounds_messages_are_refused() {
        let big = vec![0u8; MAX_HEARTBEAT_BYTES + 1];
        assert!(matches!(
            decode_heartbeat(&big),
            Err(WireError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_request(&vec![0u8; MAX_REQUEST_BYTES + 1]),
            Err(WireError::TooLarge { .. })
        ));
        // Only an ask for shards may be larger than the RPC bound.
        let padded = Request::Module {
            sha256: "a".repeat(MAX_RPC_BYTES),
        };
        assert!(matches!(
            decode_request(&encode(&padded)),
            Err(WireError::TooLarge { .. })
        ));
        let ask = Request::Shards {
            run: "r1".into(),
            have: vec![crate::sync::Have {
                node: "n".into(),
                ranges: (0..20_000).map(|i| (i * 2, i * 2)).collect(),
            }],
        };
        let bytes = encode(&ask);
        assert!(bytes.len() > MAX_RPC_BYTES);
        assert_eq!(decode_request(&bytes).ok(), Some(ask));
        let mut hb = heartbeat();
        hb.name = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            decode_heartbeat(&encode(&hb)),
            Err(WireError::Invalid { .. })
        ));
        let mut hb = heartbeat();
        hb.region = "Frankfurt am Main".into();
        assert!(decode_heartbeat(&encode(&hb)).is_err());
        let mut hb = heartbeat();
        hb.listen = vec!["/ip4/127.0.0.1/tcp/1".into(); MAX_LISTEN_ADDRS + 1];
        assert!(decode_heartbeat(&encode(&hb)).is_err());
        let mut hb = heartbeat();
        hb.cpu = f32::NAN;
        assert!(decode_heartbeat(&encode(&hb)).is_err());
        let mut hb = heartbeat();
        hb.name = "fra-1\x1b[2J".into();
        assert!(
            decode_heartbeat(&encode(&hb)).is_err(),
            "escape sequences are refused"
        );
        // A CBOR string that claims more bytes than there are.
        let lying = [0xa1, 0x62, b'i', b'd', 0x7a, 0xff, 0xff, 0xff, 0xff];
        assert!(decode_heartbeat(&lying).is_err());
    }

    #[test]
    fn a_plan_travels_by_candidate_places_in_under_a_quarter_of_its_bytes_and_comes_back_whole() {
        let candidates: Vec<Candidate> = (0..1000)
            .map(|i| Candidate {
                id: format!("12D3KooW{i:044}"),
                region: ["fra", "nrt", "ewr"][i % 3].into(),
                capacity: 100,
            })
            .collect();
        // Shares in another order than the candidates', as a plan by region.
        let mut order: Vec<&Candidate> = candidates.iter().collect();
        order.sort_by_key(|c| (c.region.clone(), std::cmp::Reverse(c.id.clone())));
        let plan = Plan {
            term: 3,
            id: (2, 5),
            shares: order
                .iter()
                .zip(ExecutionSegment::split(&vec![100; order.len()]))
                .zip((0u64..).step_by(100))
                .map(|((c, segment), first_vu_id)| Assigned {
                    node: c.id.clone(),
                    segment,
                    first_vu_id,
                })
                .collect(),
        };
        let Some(on_wire) = plan.to_wire(&candidates) else {
            panic!("a plan of candidates");
        };
        let env = |body| RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: "r1".into(),
            body,
            sig: None,
        };
        let bytes = encode(&env(RunMessage::Assign(on_wire.clone())));
        let whole = encode(&plan).len();
        assert!(
            bytes.len() * 4 < whole,
            "{} bytes on the wire, {whole} as the plan",
            bytes.len()
        );
        let Ok(decoded) = decode_run(&bytes) else {
            panic!("an assign decodes");
        };
        assert_eq!(decoded.body, RunMessage::Assign(on_wire.clone()));
        assert_eq!(on_wire.resolve(&candidates), Ok(plan.clone()));
        // A place past the candidates this node holds names no node.
        assert!(
            on_wire
                .resolve(&candidates[..999])
                .is_err_and(|e| e.contains("candidate")),
            "{:?}",
            on_wire.resolve(&candidates[..999])
        );
        // A share of a node that is no candidate has no place.
        let mut stranger = plan.clone();
        stranger.shares[7].node = "12D3KooWstranger".into();
        assert_eq!(stranger.to_wire(&candidates), None);
        // Places beyond any proposal, and shares that do not tile, are refused.
        let mut far = on_wire.clone();
        far.shares[0].0 = MAX_CANDIDATES as u32;
        assert!(decode_run(&encode(&env(RunMessage::Assign(far)))).is_err());
        let mut gap = on_wire;
        gap.shares[1].1 += 1;
        assert!(decode_run(&encode(&env(RunMessage::Assign(gap)))).is_err());
    }
}
