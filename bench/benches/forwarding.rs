//! The forwarding path per scenario: one worker polling its in-memory ports, the same
//! worker and pipeline the daemon runs (see `vswitch bench` for the multi-worker run).
//! The NAT scenarios translate established flows both ways (half the frames from the
//! containers, half from the uplink).

use control::bench::{Params, Scenario, setup};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn scenarios(c: &mut Criterion) {
    for (name, scenario, macs, flows) in [
        ("l2/1k_macs", Scenario::L2, 1024, 0),
        ("l2/100k_macs", Scenario::L2, 100_000, 0),
        ("vlan/1k_macs", Scenario::Vlan, 1024, 0),
        ("nat/1k_flows", Scenario::Nat, 1024, 1024),
        ("nat/64k_flows", Scenario::Nat, 1024, 65_536),
    ] {
        let d = Params::default();
        let p = Params {
            scenario,
            macs,
            flows: if flows == 0 { d.flows } else { flows },
            ..d
        };
        let Ok(mut s) = setup(&p) else {
            panic!("scenario {name} failed to set up");
        };
        let Some(mut w) = s.workers.pop() else {
            panic!("no worker");
        };
        // One poll_all moves one batch (64 frames) per port.
        let per_poll = 64 * w.rx_slots().len() as u64;
        let mut g = c.benchmark_group("forwarding");
        g.throughput(Throughput::Elements(per_poll));
        g.bench_function(format!("{name}/64B"), |b| b.iter(|| w.poll_all()));
        g.finish();
    }
}

criterion_group!(benches, scenarios);
criterion_main!(benches);
