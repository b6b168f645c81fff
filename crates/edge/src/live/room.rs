//! One event's room on this edge: a task that owns the event's [`Board`] and its subscribers.
//! Because one task does both, a socket that joins gets the snapshot of exactly the board the
//! next frame applies to: nothing missed, nothing twice. Each frame is serialised once.
//!
//! The room loads the board from Postgres when it starts and again when it falls behind (a
//! message about a lot it does not show, or a NATS reconnect), then sends everyone a fresh
//! snapshot. It ends when its last subscriber leaves.

use super::board::{Board, Step};
use super::{encode, Conn, Frame, Hub};
use schemas::frames::ServerFrame;
use schemas::nats::AuctionMsg;
use schemas::EventId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a room is asked to do, in order.
pub(crate) enum RoomCmd {
    Msg(AuctionMsg),
    Join(Arc<Conn>),
    Leave(u64),
    Reload,
}

/// Starts the room of `event`; its inbox is unbounded so the router never waits on a room.
pub(crate) fn spawn(hub: Arc<Hub>, event: EventId) -> mpsc::UnboundedSender<RoomCmd> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(hub, event, rx));
    tx
}

struct Room {
    hub: Arc<Hub>,
    board: Board,
    subs: Vec<Arc<Conn>>,
    /// The snapshot of the current board, serialised at the first join after a change.
    snapshot: Option<Frame>,
}

async fn run(hub: Arc<Hub>, event: EventId, mut rx: mpsc::UnboundedReceiver<RoomCmd>) {
    let Some(board) = load(&hub, event).await else {
        return;
    };
    let mut room = Room {
        hub: hub.clone(),
        board,
        subs: Vec::new(),
        snapshot: None,
    };
    while let Some(cmd) = rx.recv().await {
        match cmd {
            RoomCmd::Msg(msg) => room.apply(msg).await,
            RoomCmd::Join(conn) => {
                let snap = room.snapshot();
                if conn.push(&snap) {
                    room.subs.push(conn);
                }
            }
            RoomCmd::Leave(id) => room.subs.retain(|c| c.id != id),
            RoomCmd::Reload => room.reload().await,
        }
        room.subs.retain(|c| !c.is_slow());
        if room.subs.is_empty() && hub.room_may_end(event, || rx.is_empty()) {
            return;
        }
    }
}

/// The event's board from Postgres, retried until it answers or the edge stops.
async fn load(hub: &Hub, event: EventId) -> Option<Board> {
    let mut wait = Duration::from_millis(50);
    loop {
        match read_board(hub, event).await {
            Ok(b) => return Some(b),
            Err(e) => tracing::warn!(%event, error = %e, "room cannot read its event; retrying"),
        }
        tokio::select! {
            _ = hub.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

async fn read_board(hub: &Hub, event: EventId) -> Result<Board, store::StoreError> {
    let lanes = store::views::event(&hub.pool, event)
        .await?
        .map(|e| e.lanes)
        .unwrap_or(0);
    let lots = store::views::event_lots(&hub.pool, event).await?;
    Ok(Board::new(event, lanes, lots))
}

impl Room {
    fn snapshot(&mut self) -> Frame {
        self.snapshot
            .get_or_insert_with(|| encode(&self.board.snapshot(schemas::now_ms())))
            .clone()
    }

    fn send(&mut self, frame: &ServerFrame) {
        self.snapshot = None;
        let bytes = encode(frame);
        for c in &self.subs {
            c.push(&bytes);
        }
    }

    async fn apply(&mut self, msg: AuctionMsg) {
        match self.board.apply(msg) {
            Step::Nothing => {}
            Step::Send(frame) => self.send(&frame),
            Step::Rotate { lane, closed } => {
                let next = match store::views::next_lot(
                    &self.hub.pool,
                    self.board.event,
                    lane,
                    closed.lot_id,
                )
                .await
                {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = %e, "next lot unreadable; reloading the room");
                        self.reload().await;
                        return;
                    }
                };
                self.board.rotated(lane, next.clone());
                self.send(&ServerFrame::CarRotate {
                    event_id: self.board.event,
                    lane,
                    closed,
                    next,
                });
            }
            Step::Reload => self.reload().await,
        }
    }

    /// Reads the event again and sends every subscriber the fresh snapshot.
    async fn reload(&mut self) {
        if let Some(board) = load(&self.hub, self.board.event).await {
            self.board = board;
            self.snapshot = None;
            let snap = self.snapshot();
            for c in &self.subs {
                c.push(&snap);
            }
        }
    }
}
