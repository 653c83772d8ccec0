//! A bounded ring of one-second snapshots for `/history` and the dashboard's charts.

use std::collections::VecDeque;

use serde::Serialize;

/// Snapshots kept: one hour at one a second. Older ones are dropped as new ones arrive, so memory
/// stays flat however long the cluster runs.
pub const HISTORY_CAPACITY: usize = 3600;

/// The cluster one second at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    /// Wall-clock time of the snapshot, milliseconds since the Unix epoch.
    pub time: u64,
    /// Requests per second over the last complete second.
    pub requests_per_second: f64,
    /// Errors per second over the last complete second.
    pub errors_per_second: f64,
    /// Latency percentiles of the requests that ended in the last complete second, in ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Requests in flight at the snapshot.
    pub active_connections: u64,
    /// Per worker.
    pub workers: Vec<WorkerPoint>,
}

/// One worker in a [`HistoryPoint`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoint {
    /// Slot id.
    pub id: usize,
    /// Percent of one core.
    pub cpu_usage: f64,
    /// Resident memory, MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: f64,
    /// Runtime lag, ms.
    pub event_loop_lag: f64,
    /// 0 to 100.
    pub health_score: u8,
    /// Over the last complete second.
    pub requests_per_second: f64,
}

/// The ring itself.
#[derive(Debug)]
pub struct History {
    points: VecDeque<HistoryPoint>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(HISTORY_CAPACITY)
    }
}

impl History {
    /// A ring holding at most `capacity` points.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            points: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Appends `point`, dropping the oldest when full.
    pub fn push(&mut self, point: HistoryPoint) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// The newest `n` points, oldest first.
    pub fn last(&self, n: usize) -> Vec<HistoryPoint> {
        let skip = self.points.len().saturating_sub(n);
        self.points.iter().skip(skip).cloned().collect()
    }

    /// How many points are held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(time: u64) -> HistoryPoint {
        HistoryPoint {
            time,
            requests_per_second: 0.0,
            errors_per_second: 0.0,
            p50: 0.0,
            p95: 0.0,
            p99: 0.0,
            active_connections: 0,
            workers: Vec::new(),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_points_up_to_its_capacity() {
        let mut h = History::with_capacity(3);
        for t in 1..=5 {
            h.push(point(t));
        }
        assert_eq!(h.len(), 3);
        let times: Vec<u64> = h.last(10).iter().map(|p| p.time).collect();
        assert_eq!(times, [3, 4, 5]);
        let times: Vec<u64> = h.last(2).iter().map(|p| p.time).collect();
        assert_eq!(times, [4, 5]);
    }
}
