//! The cross-core mechanism: a channel mesh between shards that carries requests of a message
//! type `M` and their replies. It knows no domain type: the closed set of messages, what each
//! one answers, and the code that runs them live with the shard (`shard::calls`).
//!
//! Wire of the mesh: each shard has a bounded channel to every other shard. An [`Envelope`]
//! carries either a request (with a per-sender id and the sender's shard) or a reply (with the
//! id it answers). Each shard runs one receive task per peer; the receiver decides how a
//! request runs (the shard runs each in its own task, so a slow request such as a long-polling
//! fetch never blocks the channel), and a reply wakes the local future waiting for that id.
//! Replies travel back over the mesh, so every wake-up happens on the waiting shard's own
//! executor.
//!
//! A reply is carried type-erased ([`AnyReply`]); the typed layer above (`shard::calls`) pairs
//! each message with its reply type, so a caller gets the type it asked for and never matches
//! reply variants.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

/// A reply on its way back, its type known to the caller that waits for it.
pub type AnyReply = Box<dyn Any + Send>;

/// Why a cross-core call got no answer. Each caller maps it to the Kafka error its API uses
/// (a partition's owner gone is NOT_LEADER_OR_FOLLOWER, a coordinator's is
/// COORDINATOR_NOT_AVAILABLE, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The peer shard's end of the mesh is closed (the broker is stopping).
    #[error("shard {0} is not reachable (the broker is stopping)")]
    PeerGone(usize),
    /// The peer dropped the request without answering it (it stopped while handling it).
    #[error("shard {0} dropped the request without answering")]
    Dropped(usize),
    /// The reply was not of the type the call expects: a programmer error in the typed layer,
    /// answered as an error rather than a panic of the shard.
    #[error("shard {0} answered with a reply of the wrong type")]
    WrongReply(usize),
}

#[derive(Debug)]
pub enum Envelope<M> {
    Request { id: u64, from: usize, msg: M },
    Reply { id: u64, rep: AnyReply },
}

/// A reply that will arrive from shard `from`, of type `R`.
pub struct PendingReply<R> {
    from: usize,
    rx: oneshot::Receiver<AnyReply>,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R: 'static> PendingReply<R> {
    pub async fn wait(self) -> Result<R, RouterError> {
        let rep = self.rx.await.map_err(|_| RouterError::Dropped(self.from))?;
        match rep.downcast::<R>() {
            Ok(r) => Ok(*r),
            Err(_) => {
                debug_assert!(false, "reply of the wrong type from shard {}", self.from);
                Err(RouterError::WrongReply(self.from))
            }
        }
    }
}

/// This shard's end of the mesh.
///
/// Lives on: its shard; never shared.
pub struct Router<M: Send + 'static> {
    pub shard_id: usize,
    senders: Senders<Envelope<M>>,
    /// Mesh peer index of each shard id.
    peer_of: Vec<usize>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<AnyReply>>>,
}

impl<M: Send + 'static> Router<M> {
    pub fn new(shard_id: usize, senders: Senders<Envelope<M>>, peer_of: Vec<usize>) -> Self {
        Router {
            shard_id,
            senders,
            peer_of,
            next_id: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
        }
    }

    /// Sends `msg` to shard `to` (not this one); returns once it is in the channel, with what
    /// resolves to the reply. Requests from one shard to another arrive in the order sent.
    pub async fn send<R: 'static>(
        &self,
        to: usize,
        msg: M,
    ) -> Result<PendingReply<R>, RouterError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let env = Envelope::Request {
            id,
            from: self.shard_id,
            msg,
        };
        if self.senders.send_to(self.peer_of[to], env).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(RouterError::PeerGone(to));
        }
        Ok(PendingReply {
            from: to,
            rx,
            _reply: std::marker::PhantomData,
        })
    }

    /// Sends a reply back to the shard that asked.
    pub async fn reply(&self, to: usize, id: u64, rep: AnyReply) {
        // The peer only goes away at shutdown; then nobody waits for this reply.
        let _ = self
            .senders
            .send_to(self.peer_of[to], Envelope::Reply { id, rep })
            .await;
    }

    /// Completes the local call waiting for reply `id`.
    pub fn complete(&self, id: u64, rep: AnyReply) {
        let tx = self.pending.borrow_mut().remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(rep);
        }
    }
}
