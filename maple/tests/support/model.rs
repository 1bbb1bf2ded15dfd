//! A sequential model of the tree's semantics over a BTreeMap, for differential tests.

use std::collections::BTreeMap;

/// first -> (last, value)
#[derive(Default, Clone, Debug)]
pub struct Model {
    pub map: BTreeMap<u64, (u64, u64)>,
}

impl Model {
    pub fn range_at(&self, index: u64) -> Option<(u64, u64, u64)> {
        let (&first, &(last, value)) = self.map.range(..=index).next_back()?;
        (last >= index).then_some((first, last, value))
    }

    /// Removes `[first, last]`, trimming and splitting; returns the wholly covered ranges.
    pub fn erase_range(&mut self, first: u64, last: u64) -> Vec<(u64, u64, u64)> {
        let mut removed = Vec::new();
        let overlapping: Vec<_> = self
            .map
            .range(..=last)
            .rev()
            .take_while(|(_, (l, _))| *l >= first)
            .map(|(&f, &(l, v))| (f, l, v))
            .collect();
        for (f, l, v) in overlapping {
            self.map.remove(&f);
            if f < first {
                self.map.insert(f, (first - 1, v));
            }
            if l > last {
                self.map.insert(last + 1, (l, v));
            }
            if f >= first && l <= last {
                removed.push((f, l, v));
            }
        }
        removed.sort();
        removed
    }

    pub fn store_range(&mut self, first: u64, last: u64, value: u64) -> Vec<(u64, u64, u64)> {
        let removed = self.erase_range(first, last);
        self.map.insert(first, (last, value));
        removed
    }

    pub fn insert_range(&mut self, first: u64, last: u64, value: u64) -> Result<(), (u64, u64)> {
        let blocker = self
            .map
            .range(..=last)
            .next_back()
            .filter(|(_, (l, _))| *l >= first);
        if let Some((&f, &(l, _))) = blocker {
            // The first occupying range is the lowest one that intersects.
            let lowest = self
                .map
                .range(..=last)
                .rev()
                .take_while(|(_, (l, _))| *l >= first)
                .last()
                .map(|(&f, &(l, _))| (f, l))
                .unwrap_or((f, l));
            return Err(lowest);
        }
        self.map.insert(first, (last, value));
        Ok(())
    }

    pub fn erase(&mut self, index: u64) -> Option<(u64, u64, u64)> {
        let (first, last, value) = self.range_at(index)?;
        self.map.remove(&first);
        Some((first, last, value))
    }

    /// Free intervals intersected with [min, max], ascending.
    fn gaps(&self, min: u64, max: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut next = Some(min);
        let start = self.range_at(min).map_or(min, |(f, _, _)| f);
        for (&f, &(l, _)) in self.map.range(start..) {
            let Some(n) = next else { break };
            if f > max {
                break;
            }
            if f > n {
                gaps.push((n, f - 1));
            }
            next = l.checked_add(1).map(|x| x.max(n));
            if l >= max {
                next = None;
            }
        }
        if let Some(n) = next
            && n <= max
        {
            gaps.push((n, max));
        }
        gaps
    }

    pub fn find_gap(&self, min: u64, max: u64, size: u64) -> Option<(u64, u64)> {
        self.gaps(min, max)
            .into_iter()
            .find(|&(a, b)| b - a >= size - 1)
            .map(|(a, _)| (a, a + (size - 1)))
    }

    pub fn find_gap_rev(&self, min: u64, max: u64, size: u64) -> Option<(u64, u64)> {
        self.gaps(min, max)
            .into_iter()
            .rev()
            .find(|&(a, b)| b - a >= size - 1)
            .map(|(_, b)| (b - (size - 1), b))
    }

    pub fn ranges(&self) -> Vec<(u64, u64, u64)> {
        self.map.iter().map(|(&f, &(l, v))| (f, l, v)).collect()
    }
}
