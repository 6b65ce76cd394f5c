//! The pure codecs on their own: a whole handshake between the two state machines in
//! memory, and term decoding/encoding of a typical RPC reply. These bound what the
//! crate itself costs per connection and per message, with no network involved.

use std::hint::black_box;

use autocluster::handshake::{
    Acceptor, AcceptorConfig, AcceptorProgress, DistFlags, Initiator, InitiatorConfig,
    InitiatorProgress, LengthPrefix, LocalName, StatusDecision,
    messages::{MAX_HANDSHAKE_MESSAGE, decode_frame},
};
use autocluster::term::{self, Term};
use autocluster::wire::Status;
use autocluster::{Cookie, NodeName};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bodies(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(Status::Complete((body, n))) =
        decode_frame(buf, LengthPrefix::U16, MAX_HANDSHAKE_MESSAGE)
    {
        out.push(body.to_vec());
        buf = &buf[n..];
    }
    out
}

fn handshake_pair(c: &mut Criterion) {
    let cookie = Cookie::new("BENCHCOOKIEBENCHCOOKIE").unwrap();
    let a: NodeName = "bench_a@localhost".parse().unwrap();
    let b: NodeName = "bench_b@localhost".parse().unwrap();
    c.bench_function("handshake/state_machines_in_memory", |bench| {
        bench.iter(|| {
            let mut init = Initiator::new(
                InitiatorConfig {
                    local: LocalName::Static(a.clone()),
                    creation: 1,
                    flags: DistFlags::OURS,
                    required: DistFlags::REQUIRED,
                    cookie: cookie.clone(),
                    peer: b.clone(),
                },
                LengthPrefix::U16,
                0x1234_5678,
            );
            let mut acc = Acceptor::new(
                AcceptorConfig {
                    local: b.clone(),
                    creation: 2,
                    flags: DistFlags::OURS,
                    required: DistFlags::REQUIRED,
                    cookie: cookie.clone(),
                },
                LengthPrefix::U16,
                0x8765_4321,
            );
            let mut to_acc = Vec::new();
            init.start(&mut to_acc).unwrap();
            let mut to_init = Vec::new();
            for body in bodies(&to_acc) {
                if let AcceptorProgress::NeedDecision(_) = acc.handle(&body, &mut to_init).unwrap()
                {
                    acc.decide(StatusDecision::Ok, &mut to_init).unwrap();
                }
            }
            to_acc.clear();
            for body in bodies(&to_init) {
                init.handle(&body, &mut to_acc).unwrap();
            }
            to_init.clear();
            for body in bodies(&to_acc) {
                acc.handle(&body, &mut to_init).unwrap();
            }
            let mut done = None;
            for body in bodies(&to_init) {
                if let InitiatorProgress::Done(h) = init.handle(&body, &mut Vec::new()).unwrap() {
                    done = Some(h);
                }
            }
            black_box(done.expect("handshake completes"))
        })
    });
}

fn terms(c: &mut Criterion) {
    // Roughly what rabbit_mnesia:status/0 returns on a three-node cluster.
    let reply = term::parse_term(
        "[{nodes,[{disc,['rabbit@node-1','rabbit@node-2','rabbit@node-3']}]},\
          {running_nodes,['rabbit@node-3','rabbit@node-2','rabbit@node-1']},\
          {cluster_name,<<\"rabbit@node-1.example.com\">>},{partitions,[]},\
          {alarms,[{'rabbit@node-3',[]},{'rabbit@node-2',[]},{'rabbit@node-1',[]}]}]",
    )
    .unwrap();
    let bytes = term::encode(&reply).unwrap();
    let mut group = c.benchmark_group("term");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode_cluster_status", |b| {
        b.iter(|| black_box(term::decode(black_box(&bytes)).unwrap()))
    });
    group.bench_function("encode_cluster_status", |b| {
        b.iter(|| black_box(term::encode(black_box(&reply)).unwrap()))
    });
    let big = Term::binary(vec![7u8; 1 << 20]);
    let big_bytes = term::encode(&big).unwrap();
    group.throughput(Throughput::Bytes(big_bytes.len() as u64));
    group.bench_function("decode_1mib_binary", |b| {
        b.iter(|| black_box(term::decode(black_box(&big_bytes)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, handshake_pair, terms);
criterion_main!(benches);
