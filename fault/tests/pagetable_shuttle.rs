//! Page-table races under shuttle (random and PCT schedulers, 1,000 iterations each): walkers
//! racing to allocate the same tables and install the same page end with one set of tables and
//! one frame; a reader translating while a zap unlinks the tables sees the old translation or
//! none, and the zap leaves no table behind. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

#[path = "support/scenarios.rs"]
mod scenarios;

use fault::pagetable::{PageTable, Pte};
use maple::rcu::{DefaultRcu, Rcu};
use maple::sync::atomic::Ordering;
use maple::sync::{Arc, thread};
use maple::testing::check_random_and_pct;

fn check_both(test: impl Fn() + Send + Sync + 'static) {
    check_random_and_pct(100_000, test);
}

const ADDR: u64 = 0x4000_0000;

#[test]
fn racing_installs_share_tables_and_one_frame() {
    check_both(|| scenarios::racing_installs_share_tables_and_one_frame::<DefaultRcu>(2));
}

#[test]
fn a_reader_during_zap_sees_old_or_nothing() {
    check_both(|| {
        let table = Arc::new(PageTable::new());
        let rcu = Arc::new(DefaultRcu::default());
        let installed = Pte::new(fault::frames::Frame(7), 0);
        table.entry_or_insert(ADDR).store(installed.0, Ordering::Release);
        let reader = {
            let (table, rcu) = (table.clone(), rcu.clone());
            thread::spawn(move || {
                let _guard = rcu.read();
                let seen = table.translate(ADDR);
                assert!(seen.is_none() || seen == Some(installed), "saw {seen:?}");
            })
        };
        let frames = table.zap(ADDR, ADDR + 0x20_0000, (ADDR, ADDR + 0x20_0000), &*rcu);
        assert_eq!(frames.len(), 1);
        reader.join().unwrap();
        assert_eq!(
            table.tables(),
            2,
            "the 2 MiB table went; the upper tables cover more"
        );
        rcu.barrier();
    });
}
