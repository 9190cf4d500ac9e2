//! What one passing seed did, for its summary line.

use std::collections::BTreeMap;

/// What one passing seed did, for its summary line.
#[derive(Debug, Default)]
pub struct RunReport {
    pub elections: u64,
    pub entries_applied: u64,
    pub faults_fired: u64,
    pub creates_acknowledged: u64,
    pub creates_found_after_retry: u64,
    pub creates_given_up: u64,
    /// Deletes acknowledged or found done by a retry.
    pub deletes_acknowledged: u64,
    pub deletes_given_up: u64,
    pub final_applied_index: u64,
    pub data: Option<DataReport>,
    /// With `[group]`.
    pub group: Option<crate::group_check::GroupStats>,
    /// Which paths the faults reached (summed into a sweep's table).
    pub coverage: crate::coverage::Coverage,
    /// Simulated time from the start to the brokers' stop.
    pub simulated_ms: u64,
}

impl RunReport {
    /// What this seed adds to a sweep's summary.
    pub fn seed_stats(&self) -> crate::summary::SeedStats {
        let (batches_acknowledged, latency) = match &self.data {
            Some(data) => (data.acks_all_acknowledged + data.acks_leader_acknowledged, data.produce_latency.clone()),
            None => (0, crate::summary::ProduceLatency::default()),
        };
        crate::summary::SeedStats { coverage: self.coverage.clone(), simulated_ms: self.simulated_ms, batches_acknowledged, latency }
    }
}

/// What the data clients did in one passing seed.
#[derive(Debug, Default)]
pub struct DataReport {
    pub acks_all_acknowledged: u64,
    pub acks_leader_acknowledged: u64,
    pub produce_errors: BTreeMap<i16, u64>,
    pub records_read: u64,
    pub records_in_final_log: u64,
    pub halts: u64,
    /// Simulated time from a batch's first send to its acknowledgement.
    pub produce_latency: crate::summary::ProduceLatency,
    /// With `client = "kafka"`.
    pub kafka: Option<KafkaReport>,
}

/// What the Kafka clients did in one passing seed.
#[derive(Debug, Default)]
pub struct KafkaReport {
    pub producer_ids: u64,
    /// Batches sent more than once.
    pub batches_retried: u64,
    /// Of those, retried after an attempt the broker may have appended.
    pub retries_after_maybe_appended: u64,
    /// Retried batches answered from an earlier attempt's append (proved by
    /// the leader epoch that wrote them; a lower bound).
    pub duplicates_answered: u64,
    pub batches_given_up: u64,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults, {} elections, {} entries applied, creates: {} acknowledged, {} found after a retry, {} given up; final applied index {}",
            self.faults_fired,
            self.elections,
            self.entries_applied,
            self.creates_acknowledged,
            self.creates_found_after_retry,
            self.creates_given_up,
            self.final_applied_index
        )?;
        if self.deletes_acknowledged + self.deletes_given_up > 0 {
            write!(f, "; deletes: {} done, {} given up", self.deletes_acknowledged, self.deletes_given_up)?;
        }
        if let Some(data) = &self.data {
            write!(
                f,
                "; data: {} acks=all and {} acks=1 batches acknowledged, errors by Kafka code {:?}, {} records read, {} records in partition logs, {} disk halts",
                data.acks_all_acknowledged, data.acks_leader_acknowledged, data.produce_errors, data.records_read, data.records_in_final_log, data.halts
            )?;
            if let Some(kafka) = &data.kafka {
                write!(
                    f,
                    "; kafka: {} producer ids, {} batches retried ({} after an attempt that may have appended), {} retries answered as duplicates of an earlier leader epoch's append, {} batches given up",
                    kafka.producer_ids, kafka.batches_retried, kafka.retries_after_maybe_appended, kafka.duplicates_answered, kafka.batches_given_up
                )?;
            }
        }
        if let Some(group) = &self.group {
            write!(
                f,
                "; group: {} joins, {} generations synced, {} commits acknowledged, {} refused, {} coordinator moves, {} leaves, {} member crashes, {} records consumed, longest without a commit {} ms",
                group.joins, group.generations_synced, group.commits_acknowledged, group.commits_refused, group.coordinator_moves, group.leaves, group.crashes, group.records_consumed, group.longest_commit_gap_ms
            )?;
        }
        Ok(())
    }
}
