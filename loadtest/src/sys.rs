//! What the tool needs from the operating system: the open-file limit, its own CPU time, and a
//! wall clock shared by every process on the machine (for end-to-end latency).

use std::time::{SystemTime, UNIX_EPOCH};

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// User + system CPU seconds of this process (the hub's own reading of /proc).
pub fn own_cpu_seconds() -> f64 {
    hub::node::process_cpu_seconds()
}

/// Microseconds since the Unix epoch: the send stamp in every publication. All processes read
/// the same clock here (loopback only), so receive minus send is the end-to-end latency.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// CPU seconds the whole machine spent busy, and in all, since boot (from /proc/stat): the
/// difference over a run shows whether something else was using the cores the test shares.
pub fn machine_cpu_seconds() -> (f64, f64) {
    let line = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (ticks of 1/100 s)
    let v: Vec<f64> = line.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    if v.len() < 8 {
        return (0.0, 0.0);
    }
    let total: f64 = v.iter().sum();
    let idle = v[3] + v[4];
    ((total - idle) / 100.0, total / 100.0)
}
