//! Sampling each worker's CPU and resident memory by pid, with sysinfo.
//!
//! The master measures its workers from outside rather than trusting them to report, so a worker
//! that is stuck or leaking is still seen; and sampling by pid touches only our own children.

use std::collections::HashMap;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One process's usage at the last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    /// Resident memory.
    pub rss_bytes: u64,
    /// CPU use since the previous sample, in hundredths of a percent of one core.
    pub cpu_centi_percent: u64,
}

/// Keeps sysinfo's state between samples: CPU use is a difference between two readings.
#[derive(Default)]
pub(super) struct Sampler {
    sys: System,
}

impl Sampler {
    /// Reads `pids`; a pid that is gone is left out.
    pub(super) fn sample(&mut self, pids: &[u32]) -> HashMap<u32, Usage> {
        if pids.is_empty() {
            return HashMap::new();
        }
        let wanted: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&wanted),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        pids.iter()
            .filter_map(|&pid| {
                let p = self.sys.process(Pid::from_u32(pid))?;
                Some((
                    pid,
                    Usage {
                        rss_bytes: p.memory(),
                        cpu_centi_percent: (p.cpu_usage() * 100.0) as u64,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_sampled_with_its_memory() {
        let me = std::process::id();
        let usage = Sampler::default().sample(&[me]);
        let u = usage.get(&me).expect("the test process is alive");
        assert!(u.rss_bytes > 1024 * 1024, "rss {} bytes", u.rss_bytes);
    }

    #[test]
    fn a_pid_that_does_not_exist_is_left_out() {
        // Above the kernel's pid_max (4,194,304 at most), so no process can have it.
        assert!(Sampler::default().sample(&[u32::MAX - 1]).is_empty());
    }
}
