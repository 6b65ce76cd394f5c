//! Two engines wired back to back, with the time passed in: no socket, no runtime, no
//! clock.

use std::time::{Duration, Instant};

use super::*;
use crate::dist::control::Control;
use crate::term::{Atom, Pid, Term};

const TICK: Duration = Duration::from_secs(60);

fn config() -> Config {
    Config {
        net_ticktime: TICK,
        max_frame: 1024 * 1024,
        decode_limits: DecodeLimits::default(),
    }
}

/// A `REG_SEND` to `name` carrying `message`, as one frame.
fn frame_of(name: &str, message: Term) -> Vec<u8> {
    let control = Control::RegSend {
        from: Pid {
            node: Atom::from("a@h"),
            id: 1,
            serial: 0,
            creation: 1,
        },
        to: Atom::from(name),
    };
    let mut out = Vec::new();
    let at = frame::start(&mut out);
    control::encode(&control, Some(&message), &mut out).unwrap();
    frame::finish(&mut out, at, usize::MAX).unwrap();
    out
}

/// The name each message that `e` has received was sent to, in order.
fn received(e: &mut Engine) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(ev) = e.poll_event() {
        match ev {
            Event::Message(m) => match m.control {
                Control::RegSend { to, .. } => names.push(to.as_str().to_owned()),
                other => panic!("unexpected {other:?}"),
            },
            Event::Undecodable(e) => panic!("undecodable: {e}"),
        }
    }
    names
}

/// A connection: two engines and the bytes each has written that the other has not
/// read yet.
struct Pair {
    a: Engine,
    b: Engine,
    now: Instant,
    /// Bytes written to the wire (counted per side), ticks included.
    written: [usize; 2],
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        Pair {
            a: Engine::new(now, config(), &[]),
            b: Engine::new(now, config(), &[]),
            now,
            written: [0, 0],
        }
    }

    /// Moves whatever either side has to send to the other, as a writer that writes at
    /// once and a reader that reads whenever it is allowed to.
    fn pump(&mut self) {
        for _ in 0..16 {
            let mut moved = false;
            for side in 0..2 {
                let (from, to) = if side == 0 {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                if let Some(batch) = from.poll_transmit(self.now) {
                    self.written[side] += batch.len();
                    to.handle_input(self.now, &batch);
                    from.on_transmitted(self.now, batch);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the time to `until`, firing each side's timeouts when due and moving the
    /// bytes between them.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = until;
    }
}

#[test]
fn messages_cross_in_order_and_ticks_are_not_events() {
    let mut p = Pair::new();
    for name in ["one", "two", "three"] {
        p.a.queue(frame_of(name, Term::atom("x")));
    }
    p.pump();
    assert_eq!(received(&mut p.b), ["one", "two", "three"]);
    p.run_until(p.now + TICK);
    assert!(p.written[0] > 0 && received(&mut p.b).is_empty());
}

#[test]
fn an_idle_connection_ticks_and_survives_three_tick_times() {
    let mut p = Pair::new();
    let start = p.now;
    p.run_until(start + 3 * TICK);
    assert_eq!(p.a.closed(), None);
    assert_eq!(p.b.closed(), None);
    // A tick every quarter of net_ticktime, each way: 12 of 4 bytes.
    assert_eq!(p.written, [48, 48]);
}

#[test]
fn a_peer_silent_for_net_ticktime_is_declared_dead_and_not_before() {
    let start = Instant::now();
    // The peer's ticks never arrive; this side's own ticks go out.
    let mut a = Engine::new(start, config(), &[]);
    let almost = start + TICK - Duration::from_millis(1);
    a.handle_timeout(almost);
    assert_eq!(a.closed(), None);
    let tick = a.poll_transmit(almost).expect("a tick was due");
    assert_eq!(tick, frame::TICK);
    a.on_transmitted(almost, tick);
    assert_eq!(a.poll_timeout(), Some(start + TICK));
    a.handle_timeout(start + TICK);
    assert_eq!(a.closed(), Some(&DisconnectReason::TickTimeout(TICK)));
    assert_eq!(
        a.closed().map(DisconnectReason::fault),
        Some(crate::Fault::Timeout)
    );
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn a_write_that_does_not_finish_within_net_ticktime_ends_the_connection() {
    let now = Instant::now();
    let mut e = Engine::new(now, config(), &[]);
    e.queue(frame_of("x", Term::nil()));
    let batch = e.poll_transmit(now).expect("a batch");
    assert!(!batch.is_empty());
    // Bytes keep arriving: only the write is stuck.
    e.handle_input(now + TICK / 2, &frame::TICK);
    assert_eq!(e.poll_timeout(), Some(now + TICK));
    e.handle_timeout(now + TICK);
    assert_eq!(e.closed(), Some(&DisconnectReason::WriteTimeout(TICK)));
}

#[test]
fn a_frame_over_the_maximum_closes_before_its_bytes_are_buffered() {
    let now = Instant::now();
    let mut e = Engine::new(now, config(), &[]);
    let len = 64 * 1024 * 1024u32;
    e.handle_input(now, &len.to_be_bytes());
    assert!(e.poll_event().is_none());
    assert_eq!(
        e.closed(),
        Some(&DisconnectReason::FrameTooLarge {
            len: len as usize,
            max: 1024 * 1024
        })
    );
    assert!(!e.wants_read());
    assert_eq!(
        e.closed().map(DisconnectReason::fault),
        Some(crate::Fault::PeerMisbehaved)
    );
}

#[test]
fn the_read_buffer_grows_with_the_frame_being_read_and_no_further() {
    let now = Instant::now();
    let mut e = Engine::new(now, config(), &[]);
    // Only ticks so far: a small buffer.
    assert!(e.read_buffer().capacity() < 1024);
    let big = frame_of("big", Term::Binary(vec![7; 200_000]));
    e.handle_input(now, &big[..10]);
    let room = e.read_buffer().capacity();
    assert!(
        (big.len()..=big.len() + 1024).contains(&room),
        "room {room} for a frame of {}",
        big.len()
    );
    e.handle_input(now, &big[10..]);
    assert_eq!(received(&mut e), ["big"]);
}

#[test]
fn leftover_bytes_from_the_handshake_are_read_first() {
    let now = Instant::now();
    let f = frame_of("early", Term::nil());
    let mut e = Engine::new(now, config(), &f);
    assert!(!e.wants_read(), "a whole frame waits in the buffer");
    assert_eq!(received(&mut e), ["early"]);
    assert!(e.wants_read());
}

#[test]
fn the_peer_closing_ends_the_connection_with_its_reason_and_stops_everything() {
    let now = Instant::now();
    let mut e = Engine::new(now, config(), &[]);
    e.handle_read(now, 0);
    assert_eq!(e.closed(), Some(&DisconnectReason::ClosedByPeer));
    e.queue(frame_of("late", Term::nil()));
    assert!(e.poll_transmit(now).is_none());
    assert!(e.poll_timeout().is_none());
    e.close(DisconnectReason::Local);
    assert_eq!(
        e.closed(),
        Some(&DisconnectReason::ClosedByPeer),
        "the first reason wins"
    );
}

#[test]
fn an_undecodable_frame_is_reported_and_the_next_one_read() {
    let now = Instant::now();
    let mut e = Engine::new(now, config(), &[]);
    let mut bad = Vec::new();
    let at = frame::start(&mut bad);
    bad.extend_from_slice(&[112, 131, 255]);
    frame::finish(&mut bad, at, usize::MAX).unwrap();
    e.handle_input(now, &bad);
    e.handle_input(now, &frame_of("good", Term::nil()));
    assert!(matches!(e.poll_event(), Some(Event::Undecodable(_))));
    assert_eq!(received(&mut e), ["good"]);
    assert_eq!(e.closed(), None);
}

#[test]
fn small_frames_go_out_in_batches_and_a_large_one_alone() {
    let now = Instant::now();
    let mut e = Engine::new(now, config(), &[]);
    let small = frame_of("s", Term::nil());
    for _ in 0..10_000 {
        e.queue(small.clone());
    }
    let large = frame_of("l", Term::Binary(vec![1; 100_000]));
    e.queue(large.clone());
    let mut batches = Vec::new();
    while let Some(b) = e.poll_transmit(now) {
        assert!(
            e.poll_transmit(now).is_none(),
            "one batch in flight at a time"
        );
        batches.push(b.len());
        e.on_transmitted(now, b);
    }
    let total: usize = batches.iter().sum();
    assert_eq!(total, 10_000 * small.len() + large.len());
    assert!(batches.iter().all(|&b| b < BATCH + large.len()));
    assert!(batches.len() < 10, "{batches:?}");
}

/// A peer that sends requests and never reads the replies: reading pauses once more than
/// the high-water mark waits, so what it provokes is bounded; the silence of a peer that
/// this side does not read is not held against it; when the replies are written, reading
/// resumes.
#[test]
fn a_peer_that_does_not_read_its_replies_is_paused_then_timed_out() {
    let start = Instant::now();
    let mut e = Engine::new(start, config(), &[]);
    let reply = frame_of("reply", Term::Binary(vec![0; 1000]));
    let mut replies = 0;
    while e.wants_read() {
        e.handle_input(start, &frame_of("request", Term::nil()));
        assert_eq!(received(&mut e), ["request"]);
        e.queue(reply.clone());
        replies += 1;
        assert!(replies < 1000, "reading never paused");
    }
    assert!(e.reading_paused() && !e.has_room());
    assert_eq!(replies, HIGH_WATER / reply.len() + 1);
    let batch = e.poll_transmit(start).expect("a batch");
    // Paused: no tick timeout, only the write's.
    e.handle_timeout(start + TICK - Duration::from_millis(1));
    assert_eq!(e.closed(), None);
    assert_eq!(e.poll_timeout(), Some(start + TICK));
    // The peer reads after all: the replies are written, reading resumes.
    let later = start + TICK / 2;
    e.on_transmitted(later, batch);
    assert!(!e.reading_paused() && e.wants_read());
    // Its silence counts from the resume: past `start + TICK` it is still alive.
    e.handle_timeout(start + TICK);
    assert_eq!(e.closed(), None);
    // It stops reading again: the next write times out.
    let batch = e.poll_transmit(start + TICK).expect("the tick");
    assert!(!batch.is_empty());
    e.handle_timeout(start + 2 * TICK);
    assert_eq!(e.closed(), Some(&DisconnectReason::WriteTimeout(TICK)));
}

#[test]
fn a_tick_waits_for_a_quarter_of_net_ticktime_of_idleness_after_the_last_write() {
    let start = Instant::now();
    let mut e = Engine::new(start, config(), &[]);
    let t1 = start + TICK / 8;
    e.queue(frame_of("x", Term::nil()));
    let b = e.poll_transmit(t1).unwrap();
    e.on_transmitted(t1, b);
    assert_eq!(e.poll_timeout(), Some(t1 + TICK / 4));
    e.handle_timeout(t1 + TICK / 4 - Duration::from_millis(1));
    assert!(e.poll_transmit(t1).is_none());
    e.handle_timeout(t1 + TICK / 4);
    assert_eq!(
        e.poll_transmit(t1 + TICK / 4).as_deref(),
        Some(&frame::TICK[..])
    );
}

#[test]
fn io_errors_map_to_the_peer_closing_or_a_socket_error() {
    use std::io::{Error, ErrorKind};
    for kind in [
        ErrorKind::ConnectionReset,
        ErrorKind::BrokenPipe,
        ErrorKind::UnexpectedEof,
    ] {
        assert_eq!(
            DisconnectReason::from_io(&Error::from(kind)),
            DisconnectReason::ClosedByPeer
        );
    }
    assert!(matches!(
        DisconnectReason::from_io(&Error::other("boom")),
        DisconnectReason::Io(e) if e.contains("boom")
    ));
}

/// Reading paused, a batch handed out (the queue now under the mark) and a local frame
/// queued while it is written: reading stays paused until the batch is written, and then
/// the peer's silence counts from that moment, however long the pause lasted.
#[test]
fn only_a_written_batch_resumes_reading_and_restarts_the_silence_clock() {
    let start = Instant::now();
    let mut e = Engine::new(start, config(), &[]);
    let big = frame_of("big", Term::Binary(vec![0; 200_000]));
    e.queue(big.clone());
    e.queue(big.clone());
    assert!(e.reading_paused());
    let batch = e.poll_transmit(start).expect("a batch");
    e.queue(frame_of("local", Term::nil()));
    assert!(e.reading_paused(), "queueing never resumes reading");
    // The write takes two tick times (the peer reads slowly); the batch gets out.
    let later = start + 2 * TICK - Duration::from_secs(1);
    e.on_transmitted(later, batch);
    assert!(!e.reading_paused());
    e.handle_timeout(later + TICK / 2);
    assert_eq!(e.closed(), None, "silence counted from the resume, not from the start");
}

/// Moves `a`'s FIN to `b` (which then closes at once, as a peer that saw the connection
/// end does) and `b`'s FIN back.
fn exchange_fins(p: &mut Pair) {
    p.b.handle_read(p.now, 0);
    assert_eq!(p.b.closed(), Some(&DisconnectReason::ClosedByPeer));
    assert!(p.b.is_finished(), "a connection the peer ended closes at once");
    p.a.handle_read(p.now, 0);
}

#[test]
fn a_local_close_writes_what_was_queued_then_sends_fin_then_waits_for_the_peers() {
    let mut p = Pair::new();
    for name in ["one", "two"] {
        p.a.queue(frame_of(name, Term::atom("x")));
    }
    p.a.close(DisconnectReason::Local);
    assert_eq!(p.a.shutdown(), Shutdown::Flushing);
    assert!(!p.a.poll_shutdown(), "no FIN before the queue is written");
    assert!(!p.a.has_room(), "nothing is queued after the close");
    p.a.queue(frame_of("late", Term::nil()));
    p.pump();
    assert_eq!(received(&mut p.b), ["one", "two"], "queued before the close, so written");
    assert!(p.a.poll_shutdown(), "the queue is written: FIN");
    assert!(!p.a.poll_shutdown(), "said once");
    assert_eq!(p.a.shutdown(), Shutdown::AwaitingPeer);
    assert!(p.a.wants_read() && !p.a.is_finished());
    // What the peer still sends is read and dropped, not handed out.
    p.b.queue(frame_of("after", Term::Binary(vec![7; 100_000])));
    p.pump();
    assert!(p.a.inbuf.is_empty(), "dropped as it is read");
    assert!(p.a.wants_read(), "read until the peer's FIN");
    assert!(p.a.poll_timeout().is_none(), "the driver bounds the close");
    exchange_fins(&mut p);
    assert!(p.a.is_finished() && !p.a.wants_read());
    assert_eq!(p.a.closed(), Some(&DisconnectReason::Local));
}

#[test]
fn a_close_in_the_middle_of_a_write_finishes_that_write_first() {
    let mut p = Pair::new();
    p.a.queue(frame_of("big", Term::Binary(vec![1; 100_000])));
    let batch = p.a.poll_transmit(p.now).unwrap();
    p.a.close(DisconnectReason::NodeStopped);
    assert!(!p.a.poll_shutdown(), "a batch is being written");
    p.b.handle_input(p.now, &batch);
    p.a.on_transmitted(p.now, batch);
    assert_eq!(received(&mut p.b), ["big"]);
    assert!(p.a.poll_shutdown());
}

#[test]
fn a_close_the_peer_or_a_failure_caused_is_finished_at_once() {
    for reason in [
        DisconnectReason::ClosedByPeer,
        DisconnectReason::TickTimeout(TICK),
        DisconnectReason::WriteTimeout(TICK),
        DisconnectReason::Io("reset".into()),
        DisconnectReason::FrameTooLarge { len: 9, max: 1 },
        DisconnectReason::Overloaded(Overload::MonitorsAndLinks { max: 1 }),
    ] {
        let mut e = Engine::new(Instant::now(), config(), &[]);
        e.queue(frame_of("dropped", Term::nil()));
        e.close(reason.clone());
        assert!(e.is_finished(), "{reason}");
        assert!(e.poll_transmit(e.last_output).is_none(), "{reason}: nothing written");
        assert!(!e.poll_shutdown() && !e.wants_read(), "{reason}");
    }
}

#[test]
fn every_local_reason_closes_gracefully() {
    for reason in [
        DisconnectReason::Local,
        DisconnectReason::Replaced,
        DisconnectReason::NodeStopped,
    ] {
        let mut p = Pair::new();
        p.a.close(reason.clone());
        assert!(p.a.poll_shutdown(), "{reason}: nothing queued, FIN at once");
        assert!(!p.a.is_finished(), "{reason}");
        exchange_fins(&mut p);
        assert!(p.a.is_finished(), "{reason}");
    }
}

#[test]
fn a_peer_that_closes_first_ends_the_wait_as_soon_as_our_fin_is_out() {
    let mut p = Pair::new();
    p.a.queue(frame_of("one", Term::nil()));
    p.a.close(DisconnectReason::Local);
    // The peer's FIN arrives while the queue is still being written.
    p.a.handle_read(p.now, 0);
    assert!(!p.a.wants_read(), "nothing more to read");
    assert!(!p.a.is_finished(), "what was queued is still written");
    p.pump();
    assert_eq!(received(&mut p.b), ["one"]);
    assert!(p.a.poll_shutdown());
    assert!(p.a.is_finished(), "both sides are closed");
}

#[test]
fn a_close_whose_time_is_up_or_whose_socket_fails_is_abandoned() {
    // The peer never reads nor closes: the driver's linger bound runs out.
    let mut p = Pair::new();
    p.a.queue(frame_of("never read", Term::nil()));
    let _stuck = p.a.poll_transmit(p.now).unwrap();
    p.a.close(DisconnectReason::Local);
    assert!(!p.a.poll_shutdown() && !p.a.is_finished());
    p.a.abandon();
    assert!(p.a.is_finished() && !p.a.wants_read());
    assert!(p.a.poll_transmit(p.now).is_none());
    assert_eq!(p.a.closed(), Some(&DisconnectReason::Local), "the reason stays");
    // Abandoning an open connection closes it, as the local side.
    let mut e = Engine::new(p.now, config(), &[]);
    e.abandon();
    assert_eq!(e.closed(), Some(&DisconnectReason::Local));
    assert!(e.is_finished());
}

#[test]
fn a_stopping_node_tells_its_peer_what_was_queued_and_the_peer_sees_it_closed() {
    // Node stop, seen from both engines: what the stopping node queued reaches the
    // peer, then the peer sees the connection closed by its peer.
    let mut p = Pair::new();
    p.a.queue(frame_of("last words", Term::nil()));
    p.b.queue(frame_of("in flight", Term::nil()));
    let from_b = p.b.poll_transmit(p.now).unwrap();
    p.a.close(DisconnectReason::NodeStopped);
    // What b sent meanwhile is dropped by the closing side.
    p.a.handle_input(p.now, &from_b);
    p.b.on_transmitted(p.now, from_b);
    assert!(p.a.inbuf.is_empty() && p.a.wants_read());
    p.pump();
    assert_eq!(received(&mut p.b), ["last words"]);
    assert!(p.a.poll_shutdown());
    exchange_fins(&mut p);
    assert!(p.a.is_finished());
    assert_eq!(p.b.closed(), Some(&DisconnectReason::ClosedByPeer));
    assert_eq!(p.b.closed().unwrap().fault(), crate::Fault::Unreachable);
}
