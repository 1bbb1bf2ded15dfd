//! Replays the Linux kernel's own maple-tree regression traces and gap-search vectors
//! (`tests/data/kernel`, format in its README) against the tree and the BTreeMap model.
#![cfg(not(feature = "shuttle"))]

#[path = "support/model.rs"]
mod model;

use maple::MapleTree;
use model::Model;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kernel")
        .join(name)
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn numbers(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|word| word.parse().ok())
        .collect()
}

fn assert_same(tree: &MapleTree<Box<u64>>, model: &Model, at: &str) {
    tree.validate()
        .unwrap_or_else(|problem| panic!("{at}: invalid tree: {problem}"));
    let guard = tree.guard();
    let contents: Vec<_> = tree.iter(&guard).map(|(f, l, v)| (f, l, *v)).collect();
    assert_eq!(contents, model.ranges(), "{at}: contents differ from the model");
}

/// One `setNN.txt` of `check_erase2_sets()`: every operation, then its CHECK lines.
fn replay_erase2(name: &str) -> usize {
    let text = std::fs::read_to_string(data(&format!("erase2/{name}"))).unwrap();
    let tree = MapleTree::<Box<u64>>::new();
    let mut model = Model::default();
    let mut operations = 0;
    let mut found: Option<(u64, u64, u64)> = None;
    for (number, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", number + 1);
        let op = line.split_whitespace().next().unwrap_or("#");
        let args = numbers(line);
        match op {
            "STORE" => {
                let (first, last) = (args[0], args[1]);
                drop(tree.store_range(first, last, Box::new(first)).unwrap());
                model.store_range(first, last, first);
            }
            "SNULL" => {
                drop(tree.erase_range(args[0], args[1]).unwrap());
                model.erase_range(args[0], args[1]);
            }
            "ERASE" => {
                let first = args[0];
                let guard = tree.guard();
                let present = tree.load(first, &guard).is_some();
                drop(guard);
                if present {
                    let erased: Vec<_> = tree.erase(first).iter().map(|(_, _, v)| *v).collect();
                    assert_eq!(
                        erased,
                        [first],
                        "{at}: erase returns the entry stored at its start"
                    );
                    model.erase(first);
                }
            }
            "CHECK" => {
                check(&tree, &mut model, line, &at, &mut found);
                continue;
            }
            _ => continue,
        }
        operations += 1;
        assert_same(&tree, &model, &at);
        assert!(tree.load(0, &tree.guard()).is_none(), "{at}: index 0 stays empty");
    }
    operations
}

fn check(
    tree: &MapleTree<Box<u64>>,
    model: &mut Model,
    line: &str,
    at: &str,
    found: &mut Option<(u64, u64, u64)>,
) {
    let guard = tree.guard();
    let kind = line.split_whitespace().nth(1).unwrap();
    match kind {
        "validate" => assert_same(tree, model, at),
        "load" => {
            let index = field(line, "index").unwrap();
            assert!(tree.load(index, &guard).is_none(), "{at}: load({index}) is NULL");
        }
        "load_ne" => {
            let (a, b) = (field(line, "index_a").unwrap(), field(line, "index_b").unwrap());
            assert_ne!(tree.load(a, &guard), tree.load(b, &guard), "{at}");
        }
        "mt_find" => {
            let (start, max) = (field(line, "start").unwrap(), field(line, "max").unwrap());
            let first = tree.iter_from(start, &guard).next();
            assert!(
                first.is_none_or(|(f, _, _)| f > max),
                "{at}: no entry in [{start}, {max}]"
            );
        }
        "iterate" => {
            let count = tree.iter(&guard).count();
            if let Some(limit) = field(line, "assert_count_le") {
                assert!(count as u64 <= limit, "{at}: {count} entries, at most {limit}");
            }
        }
        "mas_find" => {
            let (index, max) = (field(line, "index").unwrap(), field(line, "max").unwrap());
            let entry = tree.iter_from(index, &guard).next().filter(|&(f, _, _)| f <= max);
            let (f, l, v) = entry.unwrap_or_else(|| panic!("{at}: mas_find found nothing"));
            assert_eq!(*v, field(line, "expect_value").unwrap(), "{at}");
            *found = Some((f, l, *v));
        }
        "mas_prev" => {
            let (first, _, _) = found.expect("mas_prev follows mas_find");
            let min = field(line, "min").unwrap();
            let previous = first
                .checked_sub(1)
                .and_then(|i| tree.iter_rev_from(i, &guard).next());
            let (f, _, v) = previous.unwrap_or_else(|| panic!("{at}: mas_prev found nothing"));
            assert!(f >= min);
            assert_eq!(*v, field(line, "expect_value").unwrap(), "{at}");
        }
        "mtree_erase" => {
            drop(guard);
            let index = field(line, "index").unwrap();
            drop(tree.erase(index));
            model.erase(index);
            assert_same(tree, model, at);
        }
        "empty_area_rev" | "empty_area_rev_aligned" => {
            let (min, max, size) = (
                field(line, "min").unwrap(),
                field(line, "max").unwrap(),
                field(line, "size").unwrap(),
            );
            let gap = tree.find_gap_rev(min, max, size).unwrap();
            assert_eq!(
                gap,
                model.find_gap_rev(min, max, size),
                "{at}: differs from the model"
            );
            if let Some(expect_last) = field(line, "expect_last") {
                assert_eq!(gap.map(|g| g.1), Some(expect_last), "{at}");
            }
            if let Some(expect_index) = field(line, "expect_index") {
                // index_expr=(last+1-size-0) & ~0x1ff000 (align the start down to 2 MiB).
                let (_, last) = gap.unwrap_or_else(|| panic!("{at}: no gap"));
                assert_eq!((last + 1 - size) & !0x1f_f000, expect_index, "{at}");
            }
        }
        other => panic!("{at}: unknown CHECK kind {other}"),
    }
}

#[test]
fn erase2_traces_replay_like_the_kernel() {
    let summary = std::fs::read_to_string(data("erase2/SUMMARY.txt")).unwrap();
    let mut total = 0;
    let mut files = 0;
    for line in summary.lines().filter(|l| l.starts_with("set")) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let expected: usize = columns[2].parse().unwrap();
        let replayed = replay_erase2(columns[0]);
        assert_eq!(replayed, expected, "{}: every operation replayed", columns[0]);
        total += replayed;
        files += 1;
    }
    assert_eq!(files, 43);
    assert_eq!(total, 32_656);
}

/// `check_alloc_range()` / `check_alloc_rev_range()`: a real /proc/self/maps layout in page
/// numbers, then hole searches and allocation requests, each checked against the kernel's
/// expected answer and the model.
fn replay_alloc(name: &str, reverse: bool) {
    let text = std::fs::read_to_string(data(name)).unwrap();
    let tree = MapleTree::<Box<u64>>::new();
    let mut model = Model::default();
    // MTREE_ALLOC_MAX: the tree reserves [2^49, u64::MAX].
    drop(
        tree.store_range(0x2000000000000, u64::MAX, Box::new(u64::MAX))
            .unwrap(),
    );
    model.store_range(0x2000000000000, u64::MAX, u64::MAX);
    let lines: Vec<&str> = text.lines().collect();
    let (mut holes, mut requests) = (0, 0);
    for (number, line) in lines.iter().enumerate() {
        let at = format!("{name}:{}", number + 1);
        let call = lines.get(number + 1).filter(|next| next.contains("call:"));
        let op = line.split_whitespace().next().unwrap_or("#");
        match op {
            "RANGE" => {
                let args = numbers(line);
                let (first, last) = (args[0], args[1]);
                tree.insert_range(first, last, Box::new(first))
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                model.insert_range(first, last, first).unwrap();
            }
            "HOLE" => {
                let call = call.unwrap();
                let (min, max, size) = (
                    field(call, "min").unwrap(),
                    field(call, "max").unwrap(),
                    field(call, "size").unwrap(),
                );
                let index = field(call, "index").unwrap();
                let gap = if reverse {
                    tree.find_gap_rev(min, max, size)
                } else {
                    tree.find_gap(min, max, size)
                };
                let (first, last) = gap.unwrap().unwrap_or_else(|| panic!("{at}: no hole found"));
                assert_eq!(first, index, "{at}");
                if let Some(expect_last) = field(call, "last") {
                    assert_eq!(last, expect_last, "{at}");
                }
                holes += 1;
            }
            "REQ" | "POST_REQ" => {
                let (min, max, size, ret, start) = if op == "REQ" {
                    let call = call.unwrap();
                    let f = |k| field(call, k);
                    (
                        f("min").unwrap(),
                        f("max").unwrap(),
                        f("size").unwrap(),
                        call.contains("ret=0"),
                        f("start"),
                    )
                } else {
                    let a = numbers(line);
                    (a[0], a[1], a[2], a[4] == 0, Some(a[3]))
                };
                let gap = if reverse {
                    tree.find_gap_rev(min, max, size)
                } else {
                    tree.find_gap(min, max, size)
                };
                let expected = if reverse {
                    model.find_gap_rev(min, max, size)
                } else {
                    model.find_gap(min, max, size)
                };
                let gap = gap.unwrap();
                assert_eq!(gap, expected, "{at}: differs from the model");
                match gap {
                    Some((first, last)) => {
                        assert!(ret, "{at}: the kernel found no space (-EBUSY) but the tree did");
                        assert_eq!(Some(first), start, "{at}");
                        tree.insert_range(first, last, Box::new(min)).unwrap();
                        model.insert_range(first, last, min).unwrap();
                    }
                    None => assert!(!ret, "{at}: the kernel found space but the tree did not"),
                }
                requests += 1;
            }
            "POST_ERASE" => {
                let index = numbers(line)[0];
                drop(tree.erase(index));
                model.erase(index);
            }
            _ => continue,
        }
        assert_same(&tree, &model, &at);
    }
    assert_eq!(holes, 3, "{name}: every HOLE line checked");
    assert!(requests >= 7, "{name}: every REQ line checked");
}

#[test]
fn alloc_range_vectors_match_the_kernel() {
    replay_alloc("alloc_range.txt", false);
}

#[test]
fn alloc_rev_range_vectors_match_the_kernel() {
    replay_alloc("alloc_rev_range.txt", true);
}
