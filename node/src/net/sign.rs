//! Signatures of what a node says for others to pass on: its shards, and
//! the arms, handoffs and finishes of the runs it leads.
//!
//! Gossipsub signs every message with its author's key, which is enough
//! for what a node hears from the author itself. But what a node passes
//! on for another was not signed by the one who said it: a shard in an
//! anti-entropy answer, an arm relayed to a node that missed it, a finish
//! told to a straggler. A member with the mesh key could forge those. So
//! the node signs them itself, with its libp2p identity (ed25519), and
//! every node checks the signature against the key in the signer's peer
//! id before it keeps a shard or hands a run message to the state machine
//! ([`crate::core::runs`] obeys a leader's message only when its signer
//! leads the run at that term).

use std::str::FromStr;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

use crate::core::shard;
use crate::core::wire::{RunEnvelope, RunSignature};

/// Signs with this node's identity.
pub struct Signer {
    key: Keypair,
    id: String,
}

/// Why a signature was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No signature where one is needed.
    #[error("it is not signed")]
    Unsigned,
    /// The signer's id carries no public key this node can read.
    #[error("the signer {0} is not a peer id with an inline ed25519 key")]
    NoKey(String),
    /// The signature does not match.
    #[error("its signature by {0} does not match")]
    Mismatch(String),
    /// This node cannot sign (its key cannot).
    #[error("cannot sign: {0}")]
    Signing(String),
}

impl Signer {
    /// A signer with `key`, this node's identity.
    pub fn new(key: Keypair) -> Signer {
        let id = key.public().to_peer_id().to_string();
        Signer { key, id }
    }

    /// Signs a shard's bytes as [`Shard::encode`](shard::Shard::encode)
    /// makes them: the signed bytes go on the wire and into the data dir.
    pub fn sign_shard(&self, bytes: &[u8]) -> Result<Vec<u8>, SignError> {
        let sig = self
            .key
            .sign(bytes)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        Ok(shard::signed(&sig, bytes))
    }

    /// Signs a run message as this node, unless it carries a signature
    /// already (another node's, passed on).
    pub fn sign_run(&self, env: &mut RunEnvelope) -> Result<(), SignError> {
        if env.sig.is_some() {
            return Ok(());
        }
        let bytes = self
            .key
            .sign(&env.signed_part())
            .map_err(|e| SignError::Signing(e.to_string()))?;
        env.sig = Some(RunSignature {
            signer: self.id.clone(),
            bytes,
        });
        Ok(())
    }
}

/// The public key inside a peer id (ed25519 keys are inlined in it).
fn key_of(peer: &str) -> Result<PublicKey, SignError> {
    let no_key = || SignError::NoKey(peer.to_owned());
    let id = PeerId::from_str(peer).map_err(|_| no_key())?;
    let hash: &libp2p::multihash::Multihash<64> = id.as_ref();
    // The identity multihash (code 0) holds the key itself.
    if hash.code() != 0 {
        return Err(no_key());
    }
    PublicKey::try_decode_protobuf(hash.digest()).map_err(|_| no_key())
}

/// Checks that signed shard bytes were signed by `node` (the node the
/// shard says measured it).
pub fn verify_shard(bytes: &[u8], node: &str) -> Result<(), SignError> {
    let (Some(sig), inner) = shard::split_signed(bytes) else {
        return Err(SignError::Unsigned);
    };
    if key_of(node)?.verify(inner, sig) {
        Ok(())
    } else {
        Err(SignError::Mismatch(node.to_owned()))
    }
}

/// Checks a run message's signature, if it carries one.
pub fn verify_run(env: &RunEnvelope) -> Result<(), SignError> {
    let Some(sig) = &env.sig else {
        return Ok(());
    };
    if key_of(&sig.signer)?.verify(&env.signed_part(), &sig.bytes) {
        Ok(())
    } else {
        Err(SignError::Mismatch(sig.signer.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shard::Shard;
    use crate::core::wire::{Finish, Outcome, RUN_PROTOCOL, RunMessage};

    fn finish_env() -> RunEnvelope {
        let words = vec![(Some((1_700_000_000_000_000_000, 1_000)), Some((3, false)))];
        RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: "r1".into(),
            body: RunMessage::Finish(Finish {
                term: 0,
                outcome: Outcome::Complete,
                lost: Vec::new(),
                handoffs: Vec::new(),
                words_digest: Some(serde_bytes::ByteBuf::from(crate::core::wire::words_digest(
                    &words,
                ))),
                words,
            }),
            sig: None,
        }
    }

    #[test]
    fn a_run_message_passed_on_keeps_its_signature_and_a_changed_one_fails() {
        let leader = Signer::new(Keypair::generate_ed25519());
        let mut env = finish_env();
        assert_eq!(verify_run(&env), Ok(()), "unsigned: nothing to check here");
        leader.sign_run(&mut env).expect("signs");
        let signer = env.sig.as_ref().map(|s| s.signer.clone());
        assert_eq!(signer.as_deref(), Some(leader.id.as_str()));
        // Passed on through the wire, it still checks.
        let bytes = crate::core::wire::encode(&env);
        let back = crate::core::wire::decode_run(&bytes).expect("decodes");
        assert_eq!(verify_run(&back), Ok(()));
        // Another node passing it on does not re-sign it.
        let relay = Signer::new(Keypair::generate_ed25519());
        let mut relayed = back.clone();
        relay.sign_run(&mut relayed).expect("signs");
        assert_eq!(relayed.sig, back.sig);
        // A forger changes the outcome, or claims the leader signed.
        let mut forged = back.clone();
        forged.body = RunMessage::Finish(Finish {
            term: 0,
            outcome: Outcome::Failed {
                reason: "forged".into(),
            },
            lost: Vec::new(),
            handoffs: Vec::new(),
            words: Vec::new(),
            words_digest: None,
        });
        assert!(matches!(verify_run(&forged), Err(SignError::Mismatch(_))));
        // The words go without the signature's help: the same signature
        // serves the finish without them, as the gossip floods it.
        let mut bare = back.clone();
        if let RunMessage::Finish(f) = &mut bare.body {
            f.words.clear();
        }
        assert_eq!(verify_run(&bare), Ok(()));
        // Forged words (when a node started, or that it was interrupted)
        // are not the ones the signed digest names: refused as they are
        // decoded. A forged digest fails the signature.
        let mut forged = back.clone();
        if let RunMessage::Finish(f) = &mut forged.body {
            f.words[0].1 = Some((3, true));
        }
        let bytes = crate::core::wire::encode(&forged);
        assert!(crate::core::wire::decode_run(&bytes).is_err());
        if let RunMessage::Finish(f) = &mut forged.body {
            f.words_digest = Some(serde_bytes::ByteBuf::from(crate::core::wire::words_digest(
                &f.words,
            )));
        }
        assert!(crate::core::wire::decode_run(&crate::core::wire::encode(&forged)).is_ok());
        assert!(matches!(verify_run(&forged), Err(SignError::Mismatch(_))));
        let mut claimed = finish_env();
        relay.sign_run(&mut claimed).expect("signs");
        if let Some(sig) = claimed.sig.as_mut() {
            sig.signer = leader.id.clone();
        }
        assert!(matches!(verify_run(&claimed), Err(SignError::Mismatch(_))));
        let mut garbage = back;
        if let Some(sig) = garbage.sig.as_mut() {
            sig.signer = "not a peer id".into();
        }
        assert!(matches!(verify_run(&garbage), Err(SignError::NoKey(_))));
    }

    #[test]
    fn a_shard_is_checked_against_the_node_it_names_and_still_decodes() {
        let node = Signer::new(Keypair::generate_ed25519());
        let shard = Shard {
            notes: Vec::new(),
            run_id: "r1".into(),
            node: node.id.clone(),
            name: "fra-1".into(),
            region: "fra".into(),
            seq: 0,
            start_ms: 0,
            end_ms: 1000,
            last: true,
            series: crate::core::metrics::SeriesSet::new(),
        };
        let plain = shard.encode();
        assert_eq!(verify_shard(&plain, &node.id), Err(SignError::Unsigned));
        let signed = node.sign_shard(&plain).expect("signs");
        assert_eq!(verify_shard(&signed, &node.id), Ok(()));
        let back = Shard::decode(&signed).expect("a signed shard decodes");
        assert_eq!(back.encode(), plain);
        assert!(crate::core::shard::SparseShard::decode(&signed).is_ok());
        // Another member signs a shard in this node's name.
        let other = Signer::new(Keypair::generate_ed25519());
        let forged = other.sign_shard(&plain).expect("signs");
        assert_eq!(
            verify_shard(&forged, &node.id),
            Err(SignError::Mismatch(node.id.clone()))
        );
        // A flipped byte in the shard.
        let mut flipped = signed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(verify_shard(&flipped, &node.id).is_err());
    }
}
