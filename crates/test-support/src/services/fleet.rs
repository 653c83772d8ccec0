//! Several instances of one lesson on fixed ports, for a proxy in front of them.
//!
//! A proxy's configuration names its servers by address, so an instance restarted after a stop or
//! a kill comes back on the port it had: the first start takes a free port (`PORT=0`), every later
//! one asks for that port again.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::ClusterProcess;

/// `n` instances of one binary with one environment; every instance is killed on drop.
pub struct Fleet {
    /// Instance `i` listens on `ports[i]`.
    pub ports: Vec<u16>,
    instances: Vec<Option<ClusterProcess>>,
    bin: String,
    env: Vec<(String, String)>,
}

impl Fleet {
    /// Starts `n` instances of `bin` with `env` (which must not set `PORT`).
    pub fn start(bin: &str, n: usize, env: &[(&str, &str)]) -> Self {
        let mut fleet = Self {
            ports: Vec::new(),
            instances: Vec::new(),
            bin: bin.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for _ in 0..n {
            let instance = fleet.spawn("0");
            fleet.ports.push(instance.addr.port());
            fleet.instances.push(Some(instance));
        }
        fleet
    }

    fn spawn(&self, port: &str) -> ClusterProcess {
        let mut env: Vec<(&str, &str)> = vec![("PORT", port)];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ClusterProcess::start(&self.bin, &env)
    }

    /// Instance `i`, if it runs.
    pub fn get(&self, i: usize) -> Option<&ClusterProcess> {
        self.instances[i].as_ref()
    }

    /// Which instance runs the worker `pid`.
    pub fn owner_of(&self, pid: u64) -> usize {
        self.instances
            .iter()
            .position(|i| {
                i.as_ref()
                    .is_some_and(|i| i.children().contains(&(pid as u32)))
            })
            .unwrap_or_else(|| panic!("worker {pid} belongs to none of the instances"))
    }

    /// Takes instance `i` out of the fleet (to signal it and watch it go); [`Fleet::start_again`]
    /// puts a new one in its place.
    pub fn take(&mut self, i: usize) -> ClusterProcess {
        self.instances[i].take().expect("instance running")
    }

    /// Starts instance `i` again, on its port.
    pub fn start_again(&mut self, i: usize) {
        assert!(self.instances[i].is_none(), "instance {i} still runs");
        self.instances[i] = Some(self.spawn(&self.ports[i].to_string()));
    }

    /// SIGKILL the master of instance `i` and wait until its workers are gone too.
    pub fn kill(&mut self, i: usize) {
        let mut instance = self.take(i);
        let workers = instance.children();
        instance.signal(Signal::SIGKILL);
        assert!(instance.wait_exit(Duration::from_secs(10)).is_some());
        let gone = crate::eventually(Duration::from_secs(10), || {
            workers.iter().all(|w| !crate::is_alive(*w))
        });
        assert!(gone, "the killed instance's workers outlived it");
    }
}
