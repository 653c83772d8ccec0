//! The typed control channel between the master and each worker.
//!
//! One end of a Unix `socketpair` per worker, inherited by the worker as a file descriptor (as Node's
//! `NODE_CHANNEL_FD`). Frames are a 4-byte big-endian length and a JSON document, capped at
//! [`MAX_FRAME`] bytes. A frame that is too large or not a message we know is a protocol error: the
//! master treats the worker as broken and replaces it; it never trusts or panics on what it read.

use std::fmt;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// The largest frame either side accepts: control messages are small, so anything bigger is a bug or
/// an attack.
pub const MAX_FRAME: usize = 64 * 1024;

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The worker's socket is accepting: route traffic to it.
    Ready {
        /// The worker's process id, as it sees itself.
        pid: u32,
    },
    /// I am alive; sent every `HEALTH_CHECK_INTERVAL`.
    Heartbeat {
        /// The worker's own view of itself.
        stats: WorkerStats,
    },
    /// The answer to a [`MasterMessage::Request`] with the same id.
    Reply {
        /// The request's id.
        id: u64,
        /// Whatever the request asked for.
        body: serde_json::Value,
    },
    /// Cluster-scope circuit breakers: outcomes of calls, or a request for a half-open probe.
    Breaker {
        /// What the worker's breakers report.
        report: BreakerReport,
    },
    /// A connection the master handed over with its WebSocket upgrade (proxy dispatch) closed:
    /// the master stops counting it as in flight to this worker.
    HandedOffClosed {
        /// The id the master sent with the connection.
        id: u64,
    },
}

/// What a worker's breakers tell the master's, which own the state in cluster scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakerReport {
    /// Outcomes of calls that ended, oldest first: batched, so the hot path sends no frame of
    /// its own. A batch holds at most [`MAX_OUTCOMES`], which keeps the frame under
    /// [`MAX_FRAME`].
    Outcomes {
        /// The calls.
        outcomes: Vec<CallOutcome>,
    },
    /// May this worker send one half-open probe to `circuit`? Answered by
    /// [`BreakerUpdate::Probe`] with the same id.
    Probe {
        /// Chosen by the worker, echoed in the answer.
        id: u64,
        /// The circuit's name.
        circuit: String,
    },
}

/// The most outcomes one [`BreakerReport::Outcomes`] carries: with circuit names of at most
/// [`MAX_CIRCUIT_NAME`] bytes and the largest numbers, at most 35 KiB of JSON, well under
/// [`MAX_FRAME`] (a real batch, short names and small numbers, is a fifth of that).
pub const MAX_OUTCOMES: usize = 256;
/// The longest circuit name the wire carries.
pub const MAX_CIRCUIT_NAME: usize = 64;

/// One call through a worker's breaker, as the master's breaker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOutcome {
    /// The circuit's name.
    #[serde(rename = "c")]
    pub circuit: String,
    /// `success`, `failure` or `ignored` (the caller went away).
    #[serde(rename = "o")]
    pub outcome: CallResult,
    /// How long the call took, in microseconds (the master decides whether that was slow).
    #[serde(rename = "us")]
    pub duration_us: u64,
    /// The master's epoch the call was let through in: results from before a transition are
    /// stale and the master drops them.
    #[serde(rename = "e")]
    pub epoch: u64,
}

/// How a call ended, as the worker's classifier judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    /// The service answered well.
    Success,
    /// A 5xx, a timeout, a refused connection.
    Failure,
    /// Says nothing about the service; frees a probe's place.
    Ignored,
}

/// What the master's breakers tell a worker's, which obey them in cluster scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakerUpdate {
    /// The circuit's state now: sent to every worker on each transition, and to a worker that
    /// has just said Ready, for every circuit.
    State {
        /// The circuit's name.
        circuit: String,
        /// `CLOSED`, `OPEN`, `HALF_OPEN`, `FORCED_OPEN`, `DISABLED` or `METRICS_ONLY`.
        state: String,
        /// The master's epoch; a worker ignores an update older than the one it has.
        epoch: u64,
        /// While `OPEN`: how much of the wait is left, in milliseconds.
        open_for_ms: Option<u64>,
    },
    /// The answer to [`BreakerReport::Probe`].
    Probe {
        /// The request's id.
        id: u64,
        /// The epoch the probe runs in, when granted; `None` when refused.
        granted: Option<u64>,
        /// When refused: when to try again, in milliseconds.
        retry_after_ms: u64,
    },
}

/// Figures only the worker can measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Requests served since the worker started.
    pub requests: u64,
    /// Requests being served right now.
    pub in_flight: u64,
    /// The worst lateness, in microseconds, of the worker's 100 ms probe timer (or of the heartbeat
    /// timer) since the last heartbeat: a busy or blocked runtime shows here.
    pub runtime_lag_us: u64,
}

/// What the master tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MasterMessage {
    /// Stop accepting, finish in-flight requests within `deadline_ms`, close idle connections, exit 0.
    Shutdown {
        /// The drain budget in milliseconds.
        deadline_ms: u64,
    },
    /// Re-read configuration (SIGHUP on the master is broadcast as this).
    Reload,
    /// Ask the worker something; it answers with [`WorkerMessage::Reply`] and the same id.
    Request {
        /// Chosen by the master, echoed in the reply.
        id: u64,
        /// The question.
        body: serde_json::Value,
    },
    /// Cluster-scope circuit breakers: a circuit's state, or the answer to a probe request.
    Breaker {
        /// What the master's breakers say.
        update: BreakerUpdate,
    },
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum IpcError {
    /// The socket failed, or a frame was over [`MAX_FRAME`].
    Io(std::io::Error),
    /// The frame was not a message of the expected type.
    Malformed(serde_json::Error),
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Io(e) => write!(f, "control channel i/o: {e}"),
            IpcError::Malformed(e) => write!(f, "control channel sent a malformed message: {e}"),
        }
    }
}

impl std::error::Error for IpcError {}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// The reading half of a channel, yielding messages of type `M`.
pub struct Receiver<R, M> {
    frames: FramedRead<R, LengthDelimitedCodec>,
    _msg: std::marker::PhantomData<fn() -> M>,
}

impl<R: AsyncRead + Unpin, M: DeserializeOwned> Receiver<R, M> {
    /// Wraps the read half of the socket.
    pub fn new(io: R) -> Self {
        Self {
            frames: FramedRead::new(io, codec()),
            _msg: std::marker::PhantomData,
        }
    }

    /// The next message; `None` when the peer closed its end.
    pub async fn recv(&mut self) -> Option<Result<M, IpcError>> {
        let frame = match self.frames.next().await? {
            Ok(frame) => frame,
            Err(e) => return Some(Err(IpcError::Io(e))),
        };
        Some(serde_json::from_slice(&frame).map_err(IpcError::Malformed))
    }
}

/// The writing half of a channel, sending messages of type `M`.
pub struct Sender<W, M> {
    frames: FramedWrite<W, LengthDelimitedCodec>,
    _msg: std::marker::PhantomData<fn(M)>,
}

impl<W: AsyncWrite + Unpin, M: Serialize> Sender<W, M> {
    /// Wraps the write half of the socket.
    pub fn new(io: W) -> Self {
        Self {
            frames: FramedWrite::new(io, codec()),
            _msg: std::marker::PhantomData,
        }
    }

    /// Encodes and writes one message.
    pub async fn send(&mut self, msg: &M) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        self.frames.send(Bytes::from(bytes)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn messages_round_trip_over_a_socketpair() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut tx = Sender::<_, WorkerMessage>::new(a);
        let mut rx = Receiver::<_, WorkerMessage>::new(b);
        let msg = WorkerMessage::Heartbeat {
            stats: WorkerStats {
                requests: 7,
                in_flight: 1,
                runtime_lag_us: 250,
            },
        };
        tx.send(&msg).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), msg);
        drop(tx);
        assert!(rx.recv().await.is_none(), "a closed peer ends the stream");
    }

    #[tokio::test]
    async fn a_full_batch_of_outcomes_fits_in_a_frame() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut tx = Sender::<_, WorkerMessage>::new(a);
        let mut rx = Receiver::<_, WorkerMessage>::new(b);
        let outcome = CallOutcome {
            circuit: "x".repeat(MAX_CIRCUIT_NAME),
            outcome: CallResult::Failure,
            duration_us: u64::MAX,
            epoch: u64::MAX,
        };
        let msg = WorkerMessage::Breaker {
            report: BreakerReport::Outcomes {
                outcomes: vec![outcome; MAX_OUTCOMES],
            },
        };
        let len = serde_json::to_vec(&msg).unwrap().len();
        assert!(len < MAX_FRAME * 3 / 5, "a full batch is {len} bytes");
        tx.send(&msg).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), msg);
    }

    #[tokio::test]
    async fn garbage_and_oversized_frames_are_errors_not_panics() {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut rx = Receiver::<_, WorkerMessage>::new(b);
        a.write_all(&[0, 0, 0, 3, b'{', b'x', b'}']).await.unwrap();
        assert!(matches!(rx.recv().await, Some(Err(IpcError::Malformed(_)))));
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(rx.recv().await, Some(Err(IpcError::Io(_)))));
    }
}

/// Property tests: the frame decoder on arbitrary bytes, and every message's round trip.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<u64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            vec(".{0,8}", 0..4).prop_map(serde_json::Value::from),
        ]
    }

    fn worker_message() -> impl Strategy<Value = WorkerMessage> {
        prop_oneof![
            any::<u32>().prop_map(|pid| WorkerMessage::Ready { pid }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(requests, in_flight, lag)| {
                WorkerMessage::Heartbeat {
                    stats: WorkerStats {
                        requests,
                        in_flight,
                        runtime_lag_us: lag,
                    },
                }
            }),
            (any::<u64>(), json_value()).prop_map(|(id, body)| WorkerMessage::Reply { id, body }),
            vec(call_outcome(), 0..4).prop_map(|outcomes| WorkerMessage::Breaker {
                report: BreakerReport::Outcomes { outcomes }
            }),
            (any::<u64>(), "[a-z]{0,12}").prop_map(|(id, circuit)| WorkerMessage::Breaker {
                report: BreakerReport::Probe { id, circuit }
            }),
        ]
    }

    fn call_outcome() -> impl Strategy<Value = CallOutcome> {
        let result = prop_oneof![
            Just(CallResult::Success),
            Just(CallResult::Failure),
            Just(CallResult::Ignored),
        ];
        ("[a-z]{0,12}", result, any::<u64>(), any::<u64>()).prop_map(
            |(circuit, outcome, duration_us, epoch)| CallOutcome {
                circuit,
                outcome,
                duration_us,
                epoch,
            },
        )
    }

    fn master_message() -> impl Strategy<Value = MasterMessage> {
        prop_oneof![
            any::<u64>().prop_map(|deadline_ms| MasterMessage::Shutdown { deadline_ms }),
            Just(MasterMessage::Reload),
            (any::<u64>(), json_value()).prop_map(|(id, body)| MasterMessage::Request { id, body }),
            (
                "[a-z]{0,12}",
                "[A-Z_]{0,12}",
                any::<u64>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(circuit, state, epoch, open_for_ms)| {
                    MasterMessage::Breaker {
                        update: BreakerUpdate::State {
                            circuit,
                            state,
                            epoch,
                            open_for_ms,
                        },
                    }
                }),
            (
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                any::<u64>()
            )
                .prop_map(|(id, granted, retry_after_ms)| MasterMessage::Breaker {
                    update: BreakerUpdate::Probe {
                        id,
                        granted,
                        retry_after_ms
                    }
                }),
        ]
    }

    proptest! {
        #![proptest_config(crate::prop::config())]

        /// Arbitrary bytes on the channel give messages or errors, never a panic, and the stream
        /// ends: at most one frame per four bytes read, then the end.
        #[test]
        fn prop_frame_decoder_survives_arbitrary_bytes(raw in prop_oneof![
            vec(any::<u8>(), 0..300),
            vec(any::<u8>(), 0..300).prop_map(|body| {
                // A well-framed body of arbitrary bytes, sometimes with a lying length.
                let mut out = (body.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(&body);
                out
            }),
        ]) {
            let limit = raw.len() / 4 + 2;
            let seen = runtime().block_on(async {
                let mut rx = Receiver::<_, WorkerMessage>::new(&raw[..]);
                let mut seen = 0;
                while rx.recv().await.is_some() {
                    seen += 1;
                    if seen > limit {
                        break;
                    }
                }
                seen
            });
            prop_assert!(seen <= limit, "{} messages from {} bytes", seen, raw.len());
        }

        /// Every worker and master message, sent then received, is the message sent.
        #[test]
        fn prop_messages_round_trip(w in vec(worker_message(), 1..4), m in vec(master_message(), 1..4)) {
            let (got_w, got_m) = runtime().block_on(async {
                let mut wire = Vec::new();
                let mut tx = Sender::<_, WorkerMessage>::new(&mut wire);
                for msg in &w {
                    tx.send(msg).await.expect("write to memory");
                }
                drop(tx);
                let mut rx = Receiver::<_, WorkerMessage>::new(&wire[..]);
                let mut got_w = Vec::new();
                while let Some(msg) = rx.recv().await {
                    got_w.push(msg.expect("a message"));
                }
                let mut wire = Vec::new();
                let mut tx = Sender::<_, MasterMessage>::new(&mut wire);
                for msg in &m {
                    tx.send(msg).await.expect("write to memory");
                }
                drop(tx);
                let mut rx = Receiver::<_, MasterMessage>::new(&wire[..]);
                let mut got_m = Vec::new();
                while let Some(msg) = rx.recv().await {
                    got_m.push(msg.expect("a message"));
                }
                (got_w, got_m)
            });
            prop_assert_eq!(got_w, w);
            prop_assert_eq!(got_m, m);
        }
    }
}
