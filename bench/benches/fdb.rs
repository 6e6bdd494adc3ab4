//! FDB lookup and learn (refresh of a known MAC, and a new MAC) at 1k, 100k and 1M MACs.

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use dataplane::bridge::Fdb;
use dataplane::ids::{DomainId, Generation, PortId};
use dataplane::wire::MacAddr;

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x10, b[0], b[1], b[2], b[3]])
}

/// A fixed pseudo-random visiting order, so lookups do not walk memory in order.
fn order(n: u32) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n.min(1 << 16))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        })
        .collect()
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// A table of room `limit` holding MACs 0..n.
fn filled(limit: u32, n: u32) -> Fdb {
    let f = Fdb::new(limit);
    let r = f.pin();
    for i in 0..n {
        r.learn(
            DomainId(1),
            mac(i),
            PortId((i % 64) as u16 + 2),
            Generation(0),
            0,
            u32::MAX,
        );
    }
    drop(r);
    f
}

fn lookup(g: &mut Group, f: &Fdb, n: u32, ord: &[u32]) {
    g.bench_with_input(BenchmarkId::new("lookup", n), ord, |b, ord| {
        b.iter(|| {
            let r = f.pin();
            let mut hits = 0u32;
            for &i in ord {
                hits += u32::from(r.lookup(DomainId(1), mac(i)).is_some());
            }
            hits
        })
    });
}

fn lookup_prefetched(g: &mut Group, f: &Fdb, n: u32, ord: &[u32]) {
    g.bench_with_input(BenchmarkId::new("lookup_prefetched", n), ord, |b, ord| {
        b.iter(|| {
            let r = f.pin();
            let mut hits = 0u32;
            for chunk in ord.chunks(64) {
                for &i in chunk {
                    r.prefetch(DomainId(1), mac(i));
                }
                for &i in chunk {
                    hits += u32::from(r.lookup(DomainId(1), mac(i)).is_some());
                }
            }
            hits
        })
    });
}

fn learn_known(g: &mut Group, f: &Fdb, n: u32, ord: &[u32]) {
    g.bench_with_input(BenchmarkId::new("learn_known", n), ord, |b, ord| {
        let mut now = 0u32;
        b.iter(|| {
            now = now.wrapping_add(1);
            let r = f.pin();
            for &i in ord {
                r.learn(
                    DomainId(1),
                    mac(i),
                    PortId((i % 64) as u16 + 2),
                    Generation(0),
                    now / 1000,
                    u32::MAX,
                );
            }
        })
    });
}

/// New MACs into a table already holding n (setup and drop untimed).
fn learn_new(g: &mut Group, n: u32) {
    g.bench_with_input(BenchmarkId::new("learn_new", n), &n, |b, &n| {
        b.iter_batched(
            || filled((n + 1024).max(1024), n),
            |f| {
                let r = f.pin();
                for i in n..n + 1024 {
                    r.learn(DomainId(1), mac(i), PortId(2), Generation(0), 0, u32::MAX);
                }
                drop(r);
                f
            },
            BatchSize::PerIteration,
        )
    });
}

fn fdb(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    for n in [1_000u32, 100_000, 1_000_000] {
        let f = filled(n.max(1024), n);
        let ord = order(n);
        g.throughput(Throughput::Elements(ord.len() as u64));
        lookup(&mut g, &f, n, &ord);
        lookup_prefetched(&mut g, &f, n, &ord);
        learn_known(&mut g, &f, n, &ord);
        g.throughput(Throughput::Elements(1024));
        learn_new(&mut g, n);
    }
    g.finish();
}

criterion_group!(benches, fdb);
criterion_main!(benches);
