//! Answer slots: at most `DATABASE_MAX_CONNECTIONS` reads of the log are
//! answered at once, from the moment a read starts until its body has been
//! sent (or its client has gone). The memory budget gives each slot one
//! answer of `ANSWER_MAX_BYTES`; a slot per connection alone would not hold
//! it, because an answer outlives its connection while a slow client reads
//! it, and meanwhile the connection builds the next. A read that finds no
//! slot free within `READ_TIMEOUT` answers 503, as a read past its time
//! limit does.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, AppState};

/// The slots, and how long a read waits for one.
#[derive(Debug, Clone)]
pub struct AnswerSlots {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl AnswerSlots {
    /// `count` slots (at least one); a read waits at most `wait` for one
    /// (30 s when `wait` is zero, which sets no time limit on queries).
    pub fn new(count: usize, wait: Duration) -> AnswerSlots {
        let wait = if wait.is_zero() { Duration::from_secs(30) } else { wait };
        AnswerSlots { slots: Arc::new(Semaphore::new(count.max(1))), wait }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }
}

/// Middleware: holds a slot for the read and for its body.
pub async fn hold(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let slots = &state.answer_slots;
    let permit = match tokio::time::timeout(slots.wait, slots.slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => return ApiError::Busy.into_response(),
    };
    let (parts, body) = next.run(request).await.into_parts();
    Response::from_parts(parts, Body::new(Held { body, _permit: permit }))
}

/// A body that keeps its slot until it is sent or dropped.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
