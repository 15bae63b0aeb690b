//! Which CPUs the shards run on: only CPUs of the process's affinity mask (so `taskset -c 1
//! mllpd` runs one shard on CPU 1), one shard per CPU by default, round-robin when SHARDS asks
//! for more shards than CPUs.

use glommio::CpuSet;

/// CPUs of the calling thread's affinity mask (sched_getaffinity), ascending.
pub fn affinity_cpus() -> Result<Vec<usize>, String> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .ok_or("cannot read the CPU affinity mask")?
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        return Err("the CPU affinity mask is empty".to_owned());
    }
    Ok(cpus)
}

/// The CPU of each shard: `shards` (default: one per CPU) placed round-robin over `cpus`.
pub fn shard_cpus(cpus: &[usize], shards: Option<usize>) -> Vec<usize> {
    assert!(!cpus.is_empty());
    let count = shards.unwrap_or(cpus.len());
    (0..count).map(|i| cpus[i % cpus.len()]).collect()
}

/// One single-CPU set per shard, for `PoolPlacement::Custom`.
pub fn cpu_sets(shard_cpus: &[usize]) -> Result<Vec<CpuSet>, String> {
    let online = CpuSet::online().map_err(|e| format!("cannot read online CPUs: {e}"))?;
    shard_cpus
        .iter()
        .map(|&cpu| {
            let set = online.clone().filter(|location| location.cpu == cpu);
            if set.is_empty() {
                Err(format!("CPU {cpu} is not online"))
            } else {
                Ok(set)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_one_shard_per_cpu_of_the_mask() {
        assert_eq!(shard_cpus(&[1], None), vec![1]);
        assert_eq!(shard_cpus(&[0, 2, 3], None), vec![0, 2, 3]);
    }

    #[test]
    fn more_shards_than_cpus_go_round_robin() {
        assert_eq!(shard_cpus(&[4, 5], Some(5)), vec![4, 5, 4, 5, 4]);
        assert_eq!(shard_cpus(&[4, 5], Some(1)), vec![4]);
    }
}
