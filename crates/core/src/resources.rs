//! Counted resources a batch's tasks share: cpus, memory, GPUs, a database that takes one
//! client. A [`Budget`] on the pool ([`PoolConfig::with_budget`](crate::PoolConfig::with_budget))
//! and a [`Demand`] on a task ([`Task::uses`](crate::Task::uses)): a task starts only when what
//! it needs fits in what the running tasks left, so four jobs of 6 GB on a 12 GB budget run two
//! at a time whatever `max_workers` allows.
//!
//! Admission is greedy in input order: a free worker takes the first ready task that fits. A
//! task that does not fit waits while smaller ones behind it start; the time shows in
//! [`TaskContext::resource_wait`](crate::TaskContext::resource_wait).

/// How much of each resource the batch has. Names are free (`cpus`, `mem`, `db`); amounts are
/// integers in the unit the caller chose (lorchestra counts memory in MiB).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    names: Vec<String>,
    capacity: Vec<u64>,
}

impl Budget {
    pub fn new() -> Self {
        Budget::default()
    }

    /// `capacity` of resource `name` (replacing an earlier amount of the same name).
    pub fn with(mut self, name: impl Into<String>, capacity: u64) -> Self {
        let name = name.into();
        if let Some(i) = self.index(&name) {
            self.capacity[i] = capacity;
        } else {
            self.names.push(name);
            self.capacity.push(capacity);
        }
        self
    }

    /// The position of resource `name` in [`Demand`]s of this budget.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn capacity(&self) -> &[u64] {
        &self.capacity
    }

    /// A demand of nothing, sized for this budget.
    pub fn nothing(&self) -> Demand {
        Demand {
            amounts: vec![0; self.names.len()],
            grows: vec![false; self.names.len()],
        }
    }

    /// `amounts` as `cpus=2,mem=4096`, naming only the resources taken.
    pub fn describe(&self, amounts: &[u64]) -> String {
        let parts: Vec<String> = self
            .names
            .iter()
            .zip(amounts)
            .filter(|(_, a)| **a > 0)
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(",")
        }
    }
}

/// What a task takes of a [`Budget`] while an attempt runs, in the budget's order. An amount
/// that grows is multiplied by the attempt number (`mem = 4G * attempt`: 4, 8, 12 GB), capped at
/// the budget, so a retry after running out of memory asks for more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    amounts: Vec<u64>,
    grows: Vec<bool>,
}

impl Demand {
    /// `amount` of the budget's resource at `index`, multiplied by the attempt if `grows`.
    pub fn set(&mut self, index: usize, amount: u64, grows: bool) {
        if self.amounts.len() <= index {
            self.amounts.resize(index + 1, 0);
            self.grows.resize(index + 1, false);
        }
        self.amounts[index] = amount;
        self.grows[index] = grows;
    }

    /// The first attempt's amounts.
    pub fn base(&self) -> &[u64] {
        &self.amounts
    }

    /// The amounts of attempt `attempt` (1 for the first), each capped at `capacity`.
    pub fn at(&self, attempt: u32, capacity: &[u64]) -> Vec<u64> {
        capacity
            .iter()
            .enumerate()
            .map(|(i, &cap)| {
                let base = self.amounts.get(i).copied().unwrap_or(0);
                let grows = self.grows.get(i).copied().unwrap_or(false);
                let amount = if grows {
                    base.saturating_mul(u64::from(attempt.max(1)))
                } else {
                    base
                };
                amount.min(cap)
            })
            .collect()
    }

    /// The first resource whose first-attempt amount exceeds `budget`, as
    /// `(name, amount, capacity)`: a task that could never start.
    pub fn exceeds<'b>(&self, budget: &'b Budget) -> Option<(&'b str, u64, u64)> {
        budget
            .names
            .iter()
            .zip(&budget.capacity)
            .zip(&self.amounts)
            .find(|((_, cap), amount)| amount > cap)
            .map(|((name, cap), amount)| (name.as_str(), *amount, *cap))
    }
}

/// Whether `amounts` fit in `free`.
pub(crate) fn fits(amounts: &[u64], free: &[u64]) -> bool {
    amounts.iter().zip(free).all(|(a, f)| a <= f)
}

pub(crate) fn take(amounts: &[u64], free: &mut [u64]) {
    for (f, a) in free.iter_mut().zip(amounts) {
        *f -= a;
    }
}

pub(crate) fn give(amounts: &[u64], free: &mut [u64]) {
    for (f, a) in free.iter_mut().zip(amounts) {
        *f += a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_amounts_multiply_by_the_attempt_and_stop_at_the_budget() {
        let budget = Budget::new().with("cpus", 8).with("mem", 12_288);
        let mut d = budget.nothing();
        d.set(0, 2, false);
        d.set(1, 4096, true);
        assert_eq!(d.at(1, budget.capacity()), vec![2, 4096]);
        assert_eq!(d.at(2, budget.capacity()), vec![2, 8192]);
        assert_eq!(d.at(4, budget.capacity()), vec![2, 12_288]);
        assert_eq!(
            budget.describe(&d.at(2, budget.capacity())),
            "cpus=2,mem=8192"
        );
        assert_eq!(d.exceeds(&budget), None);
        d.set(0, 64, false);
        assert_eq!(d.exceeds(&budget), Some(("cpus", 64, 8)));
    }

    #[test]
    fn fit_take_and_give_keep_the_books() {
        let mut free = vec![8, 12];
        assert!(fits(&[8, 6], &free));
        take(&[8, 6], &mut free);
        assert!(!fits(&[1, 0], &free));
        assert!(fits(&[0, 6], &free));
        give(&[8, 6], &mut free);
        assert_eq!(free, vec![8, 12]);
    }
}
